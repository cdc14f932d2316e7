"""Seconds to fill the activation cache: this checkout's fill against an older checkout's, side by side.

Each fill is the training loop's own: `set_up` (data, the model frozen at K, the cache), then
`FrozenPrefixCache.fill` over every training example, as a Telly-K run's first step does. Each
runs in a process of its own; for each K this checkout's and the older one's (`--before SRC`, a git
worktree of an older revision, run with PYTHONPATH=SRC/src) take turns, so that a change in a shared
machine's load falls on both. Printed per K: the best seconds of each, their ratio, and whether the
two caches hold the same states, told by the training loss over every batch replayed from each
(eval mode, no dropout). Usage:

    python bench/cache_fill_speed.py --before SRC [--task code-completion] [--model smollm2] [--data DIR]
                                     [--ks 1,15] [--rounds 2] [--max-train-examples 256] [--batch-size 8]
                                     [--max-code-len 96] [--max-nl-len 16]

Without --data the task's data set is built from this Python's standard library first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from telly.data import BUILDERS, language_named

NOW, BEFORE = "this checkout", "before"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="an older telly checkout whose fill is timed beside")
    parser.add_argument("--task", default="code-completion", choices=sorted(BUILDERS))
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", type=Path, help="dataset folder (default: build from the stdlib)")
    parser.add_argument("--ks", default="1,15", help="the K values to fill (default: 1,15)")
    parser.add_argument("--rounds", type=int, default=2, help="fills of each checkout per K, taking turns")
    parser.add_argument("--max-train-examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-code-len", type=int, default=96)
    parser.add_argument("--max-nl-len", type=int, default=16)
    parser.add_argument("--fill-one", type=int, help=argparse.SUPPRESS)  # a child process: fill at this K
    args = parser.parse_args()
    if args.fill_one is not None:
        print(json.dumps(fill_once(args, args.fill_one)))
        return
    if not (args.before / "src" / "telly").is_dir():
        parser.error(f"--before: {args.before} holds no src/telly")

    work = Path(tempfile.mkdtemp(prefix="telly-fill-bench-"))
    if args.data is None:
        args.data = work / "data"
        print(BUILDERS[args.task](language_named("python").default_sources(), args.data))
    print(f"load average before: {load_average()}", flush=True)
    rows = []
    for k in (int(k) for k in args.ks.split(",")):
        fills = {NOW: [], BEFORE: []}
        for _ in range(args.rounds):
            for checkout in (BEFORE, NOW):
                fills[checkout].append(fill_in_a_process(args, k, work / f"{checkout}-k{k}", checkout))
                print(f"K={k} {checkout}: {fills[checkout][-1]}", flush=True)
        losses = {checkout: {fill["replayed_loss"] for fill in runs} for checkout, runs in fills.items()}
        best = {checkout: min(fill["seconds"] for fill in runs) for checkout, runs in fills.items()}
        rows.append((k, fills[NOW][0]["sequences"], best, losses[NOW] == losses[BEFORE] and len(losses[NOW]) == 1))
    print(f"load average after: {load_average()}\n")
    print(f"{args.task}, model {args.model}, {args.max_train_examples} training examples, batch {args.batch_size}; "
          f"best of {args.rounds} fills each\n")
    print(f"| K | sequences | {BEFORE} (s) | {NOW} (s) | {BEFORE} / {NOW} | same states (replayed loss) |")
    print("|---|---|---|---|---|---|")
    for k, sequences, best, same in rows:
        print(f"| {k} | {sequences} | {best[BEFORE]:.1f} | {best[NOW]:.1f} | {best[BEFORE] / best[NOW]:.2f}x | "
              f"{'yes' if same else 'NO'} |")
    if not all(same for *_, same in rows):
        sys.exit("the two checkouts' caches replay different losses")


def fill_in_a_process(args: argparse.Namespace, k: int, out: Path, checkout: str) -> dict:
    """One fill at K in a new process, with this checkout's telly or the older one's."""
    env = dict(os.environ)
    if checkout == BEFORE:
        env["PYTHONPATH"] = str(args.before.resolve() / "src")
    command = [sys.executable, __file__, "--before", str(args.before), "--task", args.task, "--model", args.model,
               "--data", str(args.data.resolve()), "--max-train-examples", str(args.max_train_examples),
               "--batch-size", str(args.batch_size), "--max-code-len", str(args.max_code_len),
               "--max-nl-len", str(args.max_nl_len), "--fill-one", str(k)]
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=out)
    if result.returncode != 0:
        sys.exit(f"K={k}, {checkout}: the fill failed\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def fill_once(args: argparse.Namespace, k: int) -> dict:
    """Set up Telly-K as the training loop does and time its cache's fill; then the training loss over
    every batch replayed from the cache, which is the same for the same states."""
    import torch

    from telly import FinetuneConfig
    from telly.runtime import resolve_runtime, start_processes
    from telly.train import batch_loss, batches, set_up, training_pass

    config = FinetuneConfig(task=args.task, data=str(args.data), out=str(Path.cwd() / "run"), model=args.model, freeze=k,
                            batch_size=args.batch_size, max_train_examples=args.max_train_examples, max_eval_examples=1,
                            max_code_len=args.max_code_len, max_nl_len=args.max_nl_len)
    processes = start_processes(config.device)
    run = set_up(config, Path(config.out), processes, resolve_runtime(config.device, config.mixed_precision, processes))
    start = time.perf_counter()
    counts = run.cache.fill(run.model, training_pass(run, "filling"))
    seconds = time.perf_counter() - start
    run.model.eval()
    # Batch by batch here, not through training_pass: an older checkout's returns one callable for the pass.
    with torch.no_grad(), run.cache.replaying():
        loss = sum(batch_loss(run, [run.train[i] for i in indices]).item()
                   for indices in batches(list(range(len(run.train))), args.batch_size))
    return {"seconds": round(seconds, 2), "sequences": counts.computed, "replayed_loss": loss}


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
