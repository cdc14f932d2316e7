"""The GPU path end to end, as one table: every task with and without bf16, the speed bench, two GPUs.

On a machine with a GPU (it also runs on the CPU with `--device cpu`, which CI uses to keep it
working):
1. each of the five tasks trains a few steps and is evaluated, in full precision and under bf16
   autocast: final training loss (must be finite), the test metric, seconds and peak device memory;
2. the speed bench (`finetune_speed.measure_speed`): full fine-tuning vs Telly-K at K = L/2,
   without and with the activation cache, two epochs each, speedup of the second epoch;
3. with two or more GPUs, code search in two processes under `accelerate launch --multi_gpu`
   against the same run in one process (the losses and test metrics must agree).

    python bench/gpu_check.py [--device cuda] [--model default] [--steps 8] [--out check.json]

Data comes from this Python's standard library (the `email` package for the task checks, the whole
library for the speed bench). Prints one Markdown table; exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch

from finetune_speed import measure_speed, variant_name
from telly import FinetuneConfig, finetune
from telly.data import BUILDERS, language_named

TASKS = ("code-search", "clone-detection", "code-summarization", "code-generation", "code-completion")
BATCH = 8
TOLERANCE = 1e-3  # two processes vs one: same arithmetic, another summation order on the GPU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=8, help="training steps per task check (batch 8)")
    parser.add_argument("--speed-examples", type=int, default=2048, help="training examples per speed-bench epoch")
    parser.add_argument("--skip-speed", action="store_true", help="only the task checks (and the two-GPU run)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="telly-gpu-check-"))
    email = Path(sysconfig.get_paths()["stdlib"]) / "email"
    rows = []
    for task in TASKS:
        BUILDERS[task]([email], work / "data" / task, seed=0)
        for precision in ("no", "bf16"):
            rows.append(task_check(task, precision, args, work))
    if not args.skip_speed:
        rows += speed_rows(args, work)
    if args.device.startswith("cuda") and torch.cuda.device_count() >= 2:
        rows.append(two_gpu_check(args, work))
    print_table(rows)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if all(row["ok"] for row in rows) else 1)


def task_config(task: str, precision: str, args, work: Path, out: Path) -> FinetuneConfig:
    return FinetuneConfig(task=task, data=str(work / "data" / task), out=str(out), model=args.model, freeze=-1,
                          epochs=1, batch_size=BATCH, max_train_examples=args.steps * BATCH, max_eval_examples=16,
                          max_code_len=64, max_nl_len=32, max_target_len=24, beam_size=2, decoder_layers=2,
                          device=args.device, mixed_precision=precision, overwrite=True)


def task_check(task: str, precision: str, args, work: Path) -> dict:
    metrics = finetune(task_config(task, precision, args, work, work / "runs" / f"{task}-{precision}"))
    loss = metrics.history[-1]["train_loss"]
    scores = [metrics.test[name] for name in metrics.test]
    return {"check": task, "device": f"{metrics.device} ({metrics.device_name})", "precision": precision,
            "steps": metrics.steps, "seconds": metrics.train_seconds, "loss": loss,
            "result": f"{metrics.selection_metric} {metrics.selection_score:.4f}",
            "peak_device_memory_mb": metrics.peak_device_memory_mb,
            "ok": math.isfinite(loss) and all(math.isfinite(score) for score in scores)}


def speed_rows(args, work: Path) -> list[dict]:
    data = work / "data" / "speed"
    BUILDERS["code-search"](language_named("python").default_sources(), data, seed=0)
    rows = []
    for precision in ("no", "bf16"):
        layers, results = measure_speed("code-search", args.model, data, work / "speed", args.speed_examples, 32, 128,
                                        device=args.device, precision=precision, ks=None, lora=False)
        half = [r for r in results if r["freeze"] in (-1, layers // 2)]
        full = half[0]["later_epoch_seconds"]
        for r in half:
            rows.append({"check": f"speed: {variant_name(r)}", "device": r["device"], "precision": precision,
                         "steps": 2 * r["steps_per_epoch"], "seconds": r["later_epoch_seconds"], "loss": None,
                         "result": f"{full / r['later_epoch_seconds']:.2f}x vs full (2nd epoch; ideal "
                                   f"{layers / (layers - max(r['freeze'], 0)):.2f}x)" if r["freeze"] >= 0 else "1.00x",
                         "peak_device_memory_mb": r["peak_device_memory_mb"], "ok": True})
    return rows


def two_gpu_check(args, work: Path) -> dict:
    """Code search in two processes (one per GPU) against one process: same losses, same metrics."""
    one = finetune(task_config("code-search", "no", args, work, work / "runs" / "one-process"))
    two_out = work / "runs" / "two-processes"
    config = task_config("code-search", "no", args, work, two_out)
    argv = ["finetune", "--task", config.task, "--data", config.data, "--out", str(two_out), "--model", config.model,
            "--freeze", "-1", "--epochs", "1", "--batch-size", str(BATCH), "--max-train-examples",
            str(config.max_train_examples), "--max-eval-examples", "16", "--max-code-len", "64", "--max-nl-len", "32",
            "--device", "cuda"]
    telly = shutil.which("telly") or str(Path(sys.executable).parent / "telly")
    launched = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", telly, *argv],
                              capture_output=True, text=True)
    if launched.returncode != 0:
        return {"check": "2 GPUs (accelerate launch)", "device": "cuda x2", "precision": "no", "steps": None,
                "seconds": None, "loss": None, "result": launched.stderr.strip().splitlines()[-1],
                "peak_device_memory_mb": None, "ok": False}
    two = json.loads((two_out / "metrics.json").read_text())
    losses_agree = all(abs(a["train_loss"] - b["train_loss"]) <= TOLERANCE for a, b in zip(one.history, two["history"]))
    metric_gap = abs(two["test"][one.selection_metric] - one.selection_score)
    return {"check": "2 GPUs (accelerate launch)", "device": f"cuda x2 ({one.device_name})", "precision": "no",
            "steps": two["steps"], "seconds": two["train_seconds"], "loss": two["history"][-1]["train_loss"],
            "result": f"{one.selection_metric} {two['test'][one.selection_metric]:.4f} vs {one.selection_score:.4f} "
                      "in one process",
            "peak_device_memory_mb": two.get("peak_device_memory_mb"),
            "ok": two["processes"] == 2 and losses_agree and metric_gap <= TOLERANCE}


def print_table(rows: list[dict]) -> None:
    print("| check | device | precision | steps | seconds | final train loss | result | peak device memory (MB) | ok |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [row["check"], row["device"], row["precision"], str(row["steps"] or "n/a"),
                 f"{row['seconds']:.1f}" if row["seconds"] is not None else "n/a",
                 f"{row['loss']:.4f}" if row["loss"] is not None else "n/a", row["result"],
                 f"{row['peak_device_memory_mb']:.0f}" if row["peak_device_memory_mb"] is not None else "n/a",
                 "yes" if row["ok"] else "NO"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
