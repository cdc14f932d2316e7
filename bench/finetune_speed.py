"""Seconds per training epoch: full fine-tuning vs Telly-K, measured side by side in one process.

Every variant runs through the same `telly.finetune` loop on the same data, batches and seed, for
two epochs; the figures are the loop's own timings of the training epochs (evaluation excluded,
and kept tiny). The first epoch of a cached variant includes filling the activation cache; later
epochs show the steady state, compared with the ideal L/(L-K) speedup. Peak memory per variant is
the process's resident high-water mark while the variant ran: before each variant, freed heap is
handed back to the OS (malloc_trim) and the mark is reset (Linux /proc/self/clear_refs), so an
earlier variant's peak does not hide a later one's; on a GPU the device's own peak is shown too.
Usage:

    python bench/finetune_speed.py [--task code-search] [--model default] [--data DIR]
                                   [--max-train-examples 640] [--no-cache]
                                   [--device auto] [--mixed-precision no]

Without --data the task's data set is built from this Python's standard library first.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import tempfile
from pathlib import Path

from telly import FinetuneConfig, finetune
from telly.config import CacheOptions
from telly.data import BUILDERS, language_named
from telly.models.layers import find_backbone
from telly.models.load import load_pretrained

# Evaluation is not timed; a few examples and greedy decoding keep it from dominating the run.
EVAL_EXAMPLES = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="code-search", choices=sorted(BUILDERS))
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, help="dataset folder (default: build from the stdlib)")
    parser.add_argument("--max-train-examples", type=int, default=640, help="examples per timed epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-code-len", type=int, default=128)
    parser.add_argument("--no-cache", action="store_true", help="only the uncached variants")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="telly-bench-"))
    data = args.data or work / "data"
    if args.data is None:
        print(BUILDERS[args.task](language_named("python").default_sources(), data))
    layers, results = measure_speed(args.task, args.model, data, work, args.max_train_examples, args.batch_size,
                                    args.max_code_len, cache=not args.no_cache, device=args.device,
                                    precision=args.mixed_precision)
    print(f"\n{args.task}, model {args.model} ({layers} layers), {args.max_train_examples} examples, "
          f"batch {args.batch_size}, code length {args.max_code_len}, {results[0]['steps_per_epoch']} steps/epoch, "
          f"{results[0]['device']}, mixed precision {args.mixed_precision}\n")
    print("| variant | trainable | s/epoch (1st) | s/epoch (2nd) | speedup vs full (2nd) | ideal L/(L-K) | "
          "peak RSS (MB) | peak device memory (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    full = results[0]["later_epoch_seconds"]
    for r in results:
        print(f"| {variant_name(r)} | {r['percent_trainable']:.1f}% | {r['first_epoch_seconds']:.1f} | "
              f"{r['later_epoch_seconds']:.1f} | {full / r['later_epoch_seconds']:.2f}x | {ideal_speedup(r, layers)} | "
              f"{r['peak_rss_mb']:.0f} | {format_mb(r['peak_device_memory_mb'])} |")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))


def measure_speed(task: str, model: str, data: Path, work: Path, train_examples: int, batch_size: int,
                  max_code_len: int, cache: bool = True, device: str = "auto", precision: str = "no",
                  ks: list[int] | None = None, lora: bool = True) -> tuple[int, list[dict]]:
    """Two epochs of full fine-tuning, Telly-K for `ks` (default 0, L/2, L-1) without and with the
    cache, and LoRA; the model's layer count and one result per variant, in that order."""
    layers = find_backbone(load_pretrained(model)[0]).num_layers
    ks = ks if ks is not None else [0, layers // 2, layers - 1]
    # (method, K, cached)
    variants = [("telly", -1, False)] + [("telly", k, False) for k in ks]
    variants += [("telly", k, True) for k in ks] if cache else []
    variants += [("lora", -1, False)] if lora else []
    results = []
    for method, k, cached in variants:
        config = FinetuneConfig(
            task=task, data=str(data), out=str(work / f"{method}-k{k}-{'cache' if cached else 'plain'}-{precision}"),
            model=model, method=method, freeze=k, epochs=2, batch_size=batch_size, max_code_len=max_code_len,
            max_train_examples=train_examples, max_eval_examples=EVAL_EXAMPLES, beam_size=1, cache=CacheOptions(enabled=cached),
            device=device, mixed_precision=precision, overwrite=True,
        )
        reset_peak_memory()
        metrics = finetune(config)
        first, later = metrics.epoch_seconds
        results.append({"method": method, "freeze": k, "cached": metrics.activation_cache,
                        "first_epoch_seconds": first, "later_epoch_seconds": later,
                        "steps_per_epoch": metrics.steps // 2, "percent_trainable": metrics.params["percent_trainable"],
                        "device": f"{metrics.device} ({metrics.device_name})", "precision": metrics.precision,
                        "peak_rss_mb": peak_memory_mb(), "peak_device_memory_mb": metrics.peak_device_memory_mb})
    return layers, results


def variant_name(result: dict) -> str:
    if result["method"] == "lora":
        return "LoRA (r=8)"
    return "full (K=-1)" if result["freeze"] == -1 else f"Telly-{result['freeze']}" + (" + cache" if result["cached"] else "")


def ideal_speedup(result: dict, layers: int) -> str:
    if result["method"] == "lora":
        return "n/a"
    return f"{layers / (layers - result['freeze']):.2f}x" if result["freeze"] >= 0 else "1.00x"


def format_mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def reset_peak_memory() -> None:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size


def peak_memory_mb() -> float:
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


if __name__ == "__main__":
    main()
