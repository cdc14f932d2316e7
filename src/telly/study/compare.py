"""`telly compare`: how much fine-tuning changed each layer — RSA and linear CKA per layer.

Both models read the same N inputs: the first N test examples of the run's task, as the task's
encoder reads them (code for code search, the NL description for code generation, ...). Each
layer's token representations are mean-pooled per input (layer 0 = embedding output); RSA then
L2-normalises and correlates the two cosine-similarity matrices (Spearman), and linear CKA compares
the two representation matrices directly.
"""

from __future__ import annotations

from pathlib import Path

from telly.errors import UserError
from telly.runtime import CPU, Runtime
from telly.study.representations import (
    FeatureCache,
    RunModels,
    StudyModel,
    layer_features,
    run_models,
    sequences_fingerprint,
    weights_fingerprint,
)
from telly.study.similarity import MIN_INPUTS, linear_cka, rsa

MEASURES = {"rsa": rsa, "cka": linear_cka}


def compare_run(
    run: Path,
    model: str | None = None,
    inputs: int = 1000,
    split: str = "test",
    data: Path | None = None,
    cache: FeatureCache | None = None,
    runtime: Runtime = CPU,
) -> dict:
    """Per-layer RSA and CKA of the run's fine-tuned model against its pre-trained model.

    `model`, when given, must be the model the run started from. The inputs are the first
    `inputs` examples of `split`; `data` replaces the run's data folder (when the run was made
    elsewhere). Both models run on `runtime`'s device.
    """
    models = run_models(run, model, runtime)
    sequences = run_inputs(models, inputs, split, data)
    cache = cache or FeatureCache(None)
    layers = [
        _pooled(study_model, sequences, cache) for study_model in (models.pretrained(), models.finetuned)
    ]
    return {
        "run": str(run),
        "task": models.config.task,
        "model": models.config.model,
        "inputs": len(sequences),
        "layers": layer_similarities(*layers),
    }


def run_inputs(models: RunModels, inputs: int, split: str, data: Path | None = None) -> list[list[int]]:
    """Token ids (no padding) of the first `inputs` examples of a split of the run's data."""
    if inputs < MIN_INPUTS:
        raise UserError(f"--inputs must be at least {MIN_INPUTS}, got {inputs}")
    task = models.task
    examples = task.read_split(Path(data or models.config.data), split)[:inputs]
    if len(examples) < MIN_INPUTS:
        raise UserError(f"the {split} split has {len(examples)} examples; the comparison needs at least {MIN_INPUTS}")
    texts, max_length = task.encoder_inputs(examples)
    return task.tokenizer(texts, truncation=True, max_length=task.max_length(max_length))["input_ids"]


def _pooled(model: StudyModel, sequences: list[list[int]], cache: FeatureCache):
    key = {"kind": "pooled", "weights": weights_fingerprint(model.encoder), "inputs": sequences_fingerprint(sequences, None)}
    return cache.get(key, lambda: layer_features(model, sequences, description=f"{model.description} layers"))["pooled"]


def layer_similarities(before, after) -> list[dict[str, float]]:
    """RSA and CKA of each layer: `before` and `after` are (N, L+1, D) pooled representations."""
    if before.shape[:2] != after.shape[:2]:
        raise UserError(f"the two models' representations differ in shape: {tuple(before.shape)} vs {tuple(after.shape)}")
    return [
        {"layer": layer, **{name: measure(before[:, layer], after[:, layer]) for name, measure in MEASURES.items()}}
        for layer in range(before.size(1))
    ]


MEASURE_TITLES = {"rsa": "RSA", "cka": "linear CKA"}


def compare_markdown(comparisons: list[dict]) -> str:
    """One table per measure: a row per layer, a column per run."""
    models = sorted({report["model"] for report in comparisons})
    lines = [
        f"# How fine-tuning changed each layer of {', '.join(models)}",
        "",
        "Pre-trained vs fine-tuned representations of the same test inputs of each run's task; "
        "layer 0 is the embedding output; 1 = unchanged.",
        "",
        *(f"- {_label(report)}: {report['run']}, {report['inputs']:,} inputs" for report in comparisons),
    ]
    num_layers = max(len(report["layers"]) for report in comparisons)
    for name, title in MEASURE_TITLES.items():
        lines += ["", f"## {title}", "", "| layer | " + " | ".join(_label(r) for r in comparisons) + " |",
                  "|---" * (len(comparisons) + 1) + "|"]
        for layer in range(num_layers):
            cells = [f"{r['layers'][layer][name]:.4f}" if layer < len(r["layers"]) else "" for r in comparisons]
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare_panels(comparisons: list[dict]) -> list:
    return [
        (f"{title}: pre-trained vs fine-tuned", title, {_label(r): [row[name] for row in r["layers"]] for r in comparisons})
        for name, title in MEASURE_TITLES.items()
    ]


def _label(report: dict) -> str:
    name = Path(report["run"]).name
    return report["task"] if name == report["task"] else f"{report['task']} ({name})"
