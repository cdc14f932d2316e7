"""Seconds per training epoch: full fine-tuning vs Telly-K, measured side by side in one process.

Every variant runs through the same `telly.finetune` loop on the same data, batches and seed; the
figure is the loop's own timing of the training epoch (evaluation excluded, and kept tiny). Usage:

    python bench/finetune_speed.py [--task code-search] [--model default] [--data DIR]
                                   [--max-train-examples 640]

Without --data the task's data set is built from this Python's standard library first.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from telly import FinetuneConfig, finetune
from telly.data import BUILDERS, default_sources
from telly.models.layers import find_backbone
from telly.models.load import load_pretrained


# Evaluation is not timed; a few examples and greedy decoding keep it from dominating the run.
EVAL_EXAMPLES = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="code-search", choices=sorted(BUILDERS))
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, help="dataset folder (default: build from the stdlib)")
    parser.add_argument("--max-train-examples", type=int, default=640, help="examples in the timed epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-code-len", type=int, default=128)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="telly-bench-"))
    data = args.data or work / "data"
    if args.data is None:
        print(BUILDERS[args.task](default_sources(), data))
    layers = find_backbone(load_pretrained(args.model)[0]).num_layers
    variants = [-1, 0, layers // 2, layers - 1]

    results = []
    for k in variants:
        config = FinetuneConfig(
            task=args.task, data=str(data), out=str(work / f"k{k}"), model=args.model, freeze=k,
            epochs=1, batch_size=args.batch_size, max_code_len=args.max_code_len,
            max_train_examples=args.max_train_examples, max_eval_examples=EVAL_EXAMPLES, beam_size=1,
        )
        metrics = finetune(config)
        results.append({
            "freeze": k,
            "seconds_per_epoch": metrics["seconds_per_epoch"],
            "steps": metrics["steps"],
            "percent_trainable": metrics["params"]["percent_trainable"],
        })

    full = results[0]["seconds_per_epoch"]
    print(f"\n{args.task}, model {args.model} ({layers} layers), {args.max_train_examples} examples, "
          f"batch {args.batch_size}, code length {args.max_code_len}, {results[0]['steps']} steps/epoch\n")
    print("| variant | trainable | s/epoch | s/step | speedup vs full |")
    print("|---|---|---|---|---|")
    for result in results:
        name = "full (K=-1)" if result["freeze"] == -1 else f"Telly-{result['freeze']}"
        print(f"| {name} | {result['percent_trainable']:.1f}% | {result['seconds_per_epoch']:.1f} | "
              f"{result['seconds_per_epoch'] / result['steps']:.2f} | {full / result['seconds_per_epoch']:.2f}x |")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
