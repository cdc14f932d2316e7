"""Seconds per evaluation: full fine-tuning's vs Telly-K's with the activation cache, side by side in one process.

Each variant is set up by the training loop's own `set_up` (data, model frozen as configured, the
cache) and scores the validation split `--repeats` times through `telly.train.evaluate`, as the
loop does at each evaluation point. Full fine-tuning runs the whole model every time. With the
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
    full, cached = (evaluation_seconds(args, data, work, freeze, cache) for freeze, cache in
                    ((FULL_FINETUNING, False), (k, True)))
    print(f"\n{args.task}, model {args.model} ({layers} layers), {full['examples']} valid examples, eval batch "
          f"{args.eval_batch_size}, code length {args.max_code_len}, {full['device']}, mixed precision "
          f"{args.mixed_precision}, {args.repeats} evaluations per variant\n")
    print("| variant | 1st evaluation (s) | later evaluations (s, mean) | later vs full | selection metric |")
    print("|---|---|---|---|---|")
    for name, result in ((f"full (K={FULL_FINETUNING})", full), (f"Telly-{k} + cache", cached)):
        later = statistics.mean(result["seconds"][1:])
        print(f"| {name} | {result['seconds'][0]:.1f} | {later:.1f} | "
              f"{later / statistics.mean(full['seconds'][1:]):.2f}x | {result['score']:.4f} |")


def evaluation_seconds(args: argparse.Namespace, data: Path, work: Path, k: int, cache: bool) -> dict:
    """The seconds of each of `args.repeats` evaluations of valid by the variant Telly-K (cached or not)."""
    config = FinetuneConfig(
        task=args.task, data=str(data), out=str(work / f"k{k}"), model=args.model, freeze=k,
        max_train_examples=1, max_eval_examples=args.max_eval_examples, eval_batch_size=args.eval_batch_size,
        max_code_len=args.max_code_len, beam_size=args.beam_size, cache=CacheOptions(enabled=cache),
        device=args.device, mixed_precision=args.mixed_precision,
    )
    processes = start_processes(config.device)
    run = set_up(config, Path(config.out), processes, resolve_runtime(config.device, config.mixed_precision, processes))
    seconds, scores = [], []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        scores.append(evaluate(run, run.valid, f"evaluation {repeat + 1}")[run.task.selection_metric])
        seconds.append(time.perf_counter() - start)
    if len(set(scores)) != 1:
        raise SystemExit(f"Telly-{k}: the same weights scored {scores} in {args.repeats} evaluations")
    return {"seconds": seconds, "score": scores[0], "examples": len(run.valid),
            "device": f"{run.runtime.device} ({run.runtime.device_name})"}


if __name__ == "__main__":
    main()
