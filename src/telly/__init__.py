"""telly: study and efficiently fine-tune pre-trained code models (Telly-K).

    import telly
    model, tokenizer = telly.load_pretrained("default")   # or a hub id / local folder
    report = telly.freeze(model, 3)                        # embeddings + bottom 3 blocks frozen
    metrics = telly.finetune(telly.FinetuneConfig(task="code-search", data="data/", out="runs/k3", freeze=3,
                                                  device="auto", mixed_precision="bf16"))
    print(metrics.test, metrics.device_name)                # a RunMetrics, as runs/k3/metrics.json holds it
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name → module. Imported on first use so `import telly` and the CLI's help stay fast.
_PUBLIC = {
    "load_pretrained": "telly.models.load",
    "freeze": "telly.models.freeze",
    "param_report": "telly.models.freeze",
    "ParamReport": "telly.models.freeze",
    "find_backbone": "telly.models.layers",
    "finetune": "telly.pipeline",
    "FinetuneConfig": "telly.config",
    "LoraOptions": "telly.config",
    "AutoFreezeOptions": "telly.config",
    "CacheOptions": "telly.config",
    "TimeBudgetOptions": "telly.config",
    "FULL_FINETUNING": "telly.config",
    "RunMetrics": "telly.run_folder",
    "resolve_runtime": "telly.runtime",
    "UserError": "telly.errors",
    "load_run": "telly.use.export",
    "export_run": "telly.use.export",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'telly' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
