"""Line completion on a decoder LLM: zero-shot, full fine-tuning and Telly-K, measured in one process.

Every variant runs through the same `telly.finetune` loop on the same data, batches and seed; Telly-K
runs from the activation cache (the first epoch fills it). Printed per variant: exact match and edit
similarity on the test split, trainable parameters, seconds of each training epoch (evaluation not
counted), and the speedup of the last epoch over full fine-tuning's beside the ideal L/(L-K). The
zero-shot row is the pre-trained model's test score (the loop measures it before training).
Usage:

    python bench/decoder_completion.py [--model smollm2] [--ks 15,24,28] [--data DIR]
                                       [--max-train-examples 96] [--max-eval-examples 40] [--epochs 2]

Without --data the line-completion data set is built from this Python's standard library first.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from telly import FinetuneConfig, finetune
from telly.data import BUILDERS, language_named


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--ks", default="15,24,28", help="the K values of Telly-K (default: 15,24,28)")
    parser.add_argument("--data", type=Path, help="line-completion data folder (default: build from the stdlib)")
    parser.add_argument("--max-train-examples", type=int, default=96)
    parser.add_argument("--max-eval-examples", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-code-len", type=int, default=96, help="context and line tokens")
    parser.add_argument("--max-nl-len", type=int, default=16, help="tokens of the completed line")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="telly-decoder-bench-"))
    data = args.data or work / "data"
    if args.data is None:
        print(BUILDERS["code-completion"](language_named("python").default_sources(), data))
    results = [run_variant(args, data, work, k) for k in [-1, *map(int, args.ks.split(","))]]
    full, layers = results[0], results[0]["num_layers"]
    print(f"\ncode-completion, model {args.model} ({layers} layers), {results[0]['examples']}, batch {args.batch_size}, "
          f"code length {args.max_code_len}, line length {args.max_nl_len}, lr {args.lr}, {args.epochs} epochs, "
          f"{results[0]['device']}\n")
    print("| variant | EM | edit sim | trainable | s/epoch (each) | speedup vs full (last epoch) | ideal L/(L-K) |")
    print("|---|---|---|---|---|---|---|")
    zero = full["zero_shot_test"]
    print(f"| zero-shot | {zero['exact_match']:.2f} | {zero['edit_similarity']:.2f} | – | – | – | – |")
    for r in results:
        k = r["freeze"]
        name = "full (K=-1)" if k == -1 else f"Telly-{k} + cache"
        ideal = layers / (layers - k) if k >= 0 else 1.0
        epochs = " / ".join(f"{seconds:.1f}" for seconds in r["epoch_seconds"])
        speedup = full["epoch_seconds"][-1] / r["epoch_seconds"][-1]
        print(f"| {name} | {r['test']['exact_match']:.2f} | {r['test']['edit_similarity']:.2f} | "
              f"{r['params']['percent_trainable']:.1f}% | {epochs} | {speedup:.2f}x | {ideal:.2f}x |")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))


def run_variant(args: argparse.Namespace, data: Path, work: Path, k: int) -> dict:
    config = FinetuneConfig(
        task="code-completion", data=str(data), out=str(args.out.parent / f"k{k}" if args.out else work / f"k{k}"),
        model=args.model, freeze=k, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        max_code_len=args.max_code_len, max_nl_len=args.max_nl_len, max_train_examples=args.max_train_examples,
        max_eval_examples=args.max_eval_examples, eval_batch_size=args.max_eval_examples, device=args.device,
        overwrite=True,
    )
    metrics = finetune(config)
    return {"freeze": k, "num_layers": metrics.num_layers, "test": metrics.test, "zero_shot_test": metrics.zero_shot_test,
            "params": metrics.params, "epoch_seconds": metrics.epoch_seconds, "examples": metrics.examples,
            "device": f"{metrics.device} ({metrics.device_name})", "activation_cache": metrics.activation_cache}


if __name__ == "__main__":
    main()
