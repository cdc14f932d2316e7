"""Time to quality: how long each variant needs to come within 1 point of full fine-tuning's best
validation score, over several seeds, with 95% intervals.

Runs `telly sweep` (full fine-tuning, Telly-K for the given K, every variant once per seed, each
until its validation score stops improving: `--patience`), then reads every run's validations
against its training seconds (telly.time_to_quality). Writes time_to_quality.json, .md and .png
into the sweep folder and prints the table. A sweep folder that already holds finished variants
is reused, so the analysis can be redone without training again.
Usage:

    python bench/time_to_quality.py --task code-search --data DIR --out runs/ttq \\
        [--model default] [--ks 3,5] [--seeds 1,2,3] [--patience 3] [--within 0.01] \\
        [-- any other option of telly sweep, e.g. --progressive --epochs 20 --max-train-examples 2000]

Without --data the task's data set is built from this Python's standard library into OUT/data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from telly.cli import main as telly
from telly.files import atomic_open, write_json
from telly.run_folder import read_metrics
from telly.time_to_quality import markdown, plot, summarize


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="code-search")
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, help="dataset folder (default: built from the stdlib into OUT/data)")
    parser.add_argument("--out", type=Path, required=True, help="the sweep folder")
    parser.add_argument("--ks", default="3,5", help="the K values of Telly-K (default: 3,5)")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds, at least two (default: 1,2,3)")
    parser.add_argument("--patience", type=int, default=3, help="validations without improvement that end a run "
                        "(default: 3)")
    parser.add_argument("--within", type=float, default=0.01, help="how close to full's best valid score counts as "
                        "reached (default: 0.01, 1 point of a 0-1 metric)")
    args, sweep_options = parser.parse_known_args()
    if sweep_options[:1] == ["--"]:
        sweep_options = sweep_options[1:]
    if len(args.seeds.split(",")) < 2:
        parser.error("--seeds needs at least two seeds: the intervals are over seeds")

    data = args.data or args.out / "data"
    if args.data is None and not (data / "train.jsonl").exists():
        if telly(["data", "build", "--task", args.task, "--out", str(data)]) != 0:
            return 2
    code = telly(["sweep", "--task", args.task, "--model", args.model, "--data", str(data), "--out", str(args.out),
                  "--ks", args.ks, "--seeds", args.seeds, "--patience", str(args.patience), *sweep_options])
    if code != 0:
        return code

    runs: dict[str, dict[int, object]] = {}
    for folder in sorted(args.out.iterdir()):
        if (folder / "metrics.json").is_file() and "-seed" in folder.name:
            metrics = read_metrics(folder)
            runs.setdefault(folder.name.rsplit("-seed", 1)[0], {})[metrics.seed] = metrics
    metric = next(iter(runs["full"].values())).selection_metric
    summary = summarize(runs, args.within)
    table = markdown(summary, metric, args.within)
    write_json(args.out / "time_to_quality.json", {"task": args.task, "model": args.model, "metric": metric,
                                                   "within": args.within, "variants": summary})
    with atomic_open(args.out / "time_to_quality.md", "w") as stream:
        stream.write(f"# {args.task} on {args.model}: time to quality\n\n{table}")
    plot(args.out / "time_to_quality.png", runs, metric, f"{args.task} on {args.model}: time to quality")
    print(table, end="")
    print(f"wrote {args.out}/time_to_quality.json, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
