"""Seconds per evaluation: full fine-tuning's vs Telly-K's with the activation cache, side by side in one process.

Each variant is set up by the training loop's own `set_up` (data, model frozen as configured, the
cache) and scores the validation split `--repeats` times through `telly.train.evaluate`, as the
loop does at each evaluation point; the variants take turns, so that a change in a shared
machine's load falls on both. Full fine-tuning runs the whole model every time. With the
cache, the first evaluation runs the frozen prefix and stores its output; the later ones replay
it and run only the top L-K blocks. The ratio compares their mean with full's mean (the goal: at
most 0.6x at K = L/2). Both variants hold the same pre-trained weights, so their scores agree.
Usage:

    python bench/eval_speed.py [--task code-search] [--model default] [--data DIR] [--freeze K]
                               [--max-eval-examples N] [--repeats 3] [--device auto] [--mixed-precision no]

Without --data the task's data set is built from this Python's standard library first; --freeze
defaults to half the model's layers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from telly import FinetuneConfig
from telly.config import FULL_FINETUNING, CacheOptions
from telly.data import BUILDERS, language_named
from telly.models.layers import find_backbone
from telly.models.load import load_pretrained
from telly.runtime import resolve_runtime, start_processes
from telly.train import evaluate, set_up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="code-search", choices=sorted(BUILDERS))
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, help="dataset folder (default: build from the stdlib)")
    parser.add_argument("--freeze", type=int, help="K of the cached variant (default: half the layers)")
    parser.add_argument("--max-eval-examples", type=int, help="valid examples per evaluation (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="evaluations per variant (at least 2)")
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--max-code-len", type=int, default=128)
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    args = parser.parse_args()
    if args.repeats < 2:
        parser.error("--repeats must be at least 2: the first cached evaluation fills the cache")

    work = Path(tempfile.mkdtemp(prefix="telly-bench-"))
    data = args.data or work / "data"
    if args.data is None:
        print(BUILDERS[args.task](language_named("python").default_sources(), data))
    layers = find_backbone(load_pretrained(args.model)[0]).num_layers
    k = layers // 2 if args.freeze is None else args.freeze
    full_name = f"full (K={FULL_FINETUNING})"
    variants = {full_name: set_up_variant(args, data, work, FULL_FINETUNING, cache=False),
                f"Telly-{k} + cache": set_up_variant(args, data, work, k, cache=True)}
    seconds = evaluation_seconds(variants, args.repeats)
    full = variants[full_name]
    print(f"\n{args.task}, model {args.model} ({layers} layers), {len(full.valid)} valid examples, eval batch "
          f"{args.eval_batch_size}, code length {args.max_code_len}, {full.runtime.device} "
          f"({full.runtime.device_name}), mixed precision {args.mixed_precision}, {args.repeats} evaluations per "
          f"variant, taking turns\n")
    print("| variant | 1st evaluation (s) | later evaluations (s, mean) | later vs full | selection metric |")
    print("|---|---|---|---|---|")
    full_later = statistics.mean(seconds[full_name][0][1:])
    for name, (times, score) in seconds.items():
        later = statistics.mean(times[1:])
        print(f"| {name} | {times[0]:.1f} | {later:.1f} | {later / full_later:.2f}x | {score:.4f} |")


def set_up_variant(args: argparse.Namespace, data: Path, work: Path, k: int, cache: bool):
    """Telly-K (cached or not) set up by the training loop, ready to evaluate valid."""
    config = FinetuneConfig(
        task=args.task, data=str(data), out=str(work / f"k{k}"), model=args.model, freeze=k,
        max_train_examples=1, max_eval_examples=args.max_eval_examples, eval_batch_size=args.eval_batch_size,
        max_code_len=args.max_code_len, beam_size=args.beam_size, cache=CacheOptions(enabled=cache),
        device=args.device, mixed_precision=args.mixed_precision,
    )
    processes = start_processes(config.device)
    return set_up(config, Path(config.out), processes, resolve_runtime(config.device, config.mixed_precision, processes))


def evaluation_seconds(variants: dict, repeats: int) -> dict[str, tuple[list[float], float]]:
    """Each variant's seconds per evaluation of valid, and its score. The variants take turns, so a
    change in the machine's load falls on all of them alike."""
    seconds = {name: [] for name in variants}
    scores = {name: set() for name in variants}
    for repeat in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            scores[name].add(evaluate(run, run.valid, f"{name}, evaluation {repeat + 1}")[run.task.selection_metric])
            seconds[name].append(time.perf_counter() - start)
    for name, scored in scores.items():
        if len(scored) != 1:
            raise SystemExit(f"{name}: the same weights scored {sorted(scored)} in {repeats} evaluations")
    return {name: (seconds[name], scores[name].pop()) for name in variants}


if __name__ == "__main__":
    main()
