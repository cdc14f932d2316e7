"""Time to quality: how long each variant needs to come within 1 point of full fine-tuning's best
validation score, over several seeds, with 95% intervals.

Runs `telly sweep` (full fine-tuning, Telly-K for the given K, every variant once per seed, each
until its validation score stops improving: `--patience`), then reads every run's validations
against its training seconds (telly.time_to_quality). Writes time_to_quality.json, .md and .png
into the sweep folder and prints the table. A sweep folder that already holds finished variants
is reused, so the analysis can be redone without training again.

With `--reference SWEEP`, the targets and "full's time" come from that earlier sweep's full
fine-tuning (same task, data and seeds), and every variant of OUT, OUT's own full fine-tuning
included, is measured against it: e.g. OUT trained with half the reference's `--time-budget`.
Usage:

    python bench/time_to_quality.py --task code-search --data DIR --out runs/ttq \\
        [--model default] [--ks 3,5] [--seeds 1,2,3] [--patience 3] [--within 0.01] [--reference SWEEP] \\
        [-- any other option of telly sweep, e.g. --progressive --epochs 20 --max-train-examples 2000]

Without --data the task's data set is built from this Python's standard library into OUT/data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from telly.cli import main as telly
from telly.errors import USER_ERROR_EXIT
from telly.files import atomic_open, write_json
from telly.run_folder import RunMetrics, read_metrics
from telly.time_to_quality import FULL, markdown, plot, summarize


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="code-search")
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, help="dataset folder (default: built from the stdlib into OUT/data)")
    parser.add_argument("--out", type=Path, required=True, help="the sweep folder")
    parser.add_argument("--ks", default="3,5", help="the K values of Telly-K, or none (default: 3,5)")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds, at least two (default: 1,2,3)")
    parser.add_argument("--patience", type=int, default=3, help="validations without improvement that end a run "
                        "(default: 3)")
    parser.add_argument("--within", type=float, default=0.01, help="how close to full's best valid score counts as "
                        "reached (default: 0.01, 1 point of a 0-1 metric)")
    parser.add_argument("--reference", type=Path, help="an earlier sweep folder whose full fine-tuning sets the "
                        "targets and full's time (default: OUT's own)")
    args, sweep_options = parser.parse_known_args()
    if sweep_options[:1] == ["--"]:
        sweep_options = sweep_options[1:]
    try:
        seeds = {int(seed) for seed in args.seeds.split(",")}
    except ValueError:
        parser.error(f"--seeds: comma-separated integers, got {args.seeds!r}")
    if len(seeds) < 2:
        parser.error("--seeds needs at least two seeds: the intervals are over seeds")

    reference = finished_runs(args.reference).get(FULL, {}) if args.reference else None
    if reference is not None:  # what can be checked before any training
        mismatch = (f"it has no finished full fine-tuning (full-seed<S>) for seeds {sorted(seeds - set(reference))}"
                    if not seeds <= set(reference) else
                    reference_mismatch(reference, {"task": args.task, "model": args.model}))
        if mismatch:
            return reference_error(args.reference, mismatch)

    data = args.data or args.out / "data"
    if args.data is None and not (data / "train.jsonl").exists():
        if telly(["data", "build", "--task", args.task, "--out", str(data)]) != 0:
            return 2
    code = telly(["sweep", "--task", args.task, "--model", args.model, "--data", str(data), "--out", str(args.out),
                  "--ks", args.ks, "--seeds", args.seeds, "--patience", str(args.patience), *sweep_options])
    if code != 0:
        return code

    runs, reference_name = finished_runs(args.out), FULL
    if reference is not None:  # what the sweep's runs tell
        ours = next(iter(runs[FULL].values()))
        mismatch = reference_mismatch(reference, {what: getattr(ours, what) for what in ("selection_metric", "examples")})
        if mismatch:
            return reference_error(args.reference, mismatch)
        reference_name = f"full, {budget_label(reference)} (reference)"
        runs = {reference_name: reference,
                **{f"{variant}, {budget_label(by_seed)}": by_seed for variant, by_seed in runs.items()}}
    metric = next(iter(runs[reference_name].values())).selection_metric
    summary = summarize(runs, args.within, reference_name)
    table = markdown(summary, metric, args.within)
    write_json(args.out / "time_to_quality.json", {"task": args.task, "model": args.model, "metric": metric,
                                                   "within": args.within, "variants": summary})
    with atomic_open(args.out / "time_to_quality.md", "w") as stream:
        stream.write(f"# {args.task} on {args.model}: time to quality\n\n{table}")
    plot(args.out / "time_to_quality.png", runs, metric, f"{args.task} on {args.model}: time to quality")
    print(table, end="")
    print(f"wrote {args.out}/time_to_quality.json, .md and .png")
    return 0


def finished_runs(sweep: Path) -> dict[str, dict[int, RunMetrics]]:
    """`runs[variant][seed]` of a sweep folder's finished runs (folders `<variant>-seed<S>`)."""
    runs: dict[str, dict[int, RunMetrics]] = {}
    for folder in sorted(sweep.iterdir()) if sweep.is_dir() else ():
        if (folder / "metrics.json").is_file() and "-seed" in folder.name:
            metrics = read_metrics(folder)
            runs.setdefault(folder.name.rsplit("-seed", 1)[0], {})[metrics.seed] = metrics
    return runs


def reference_mismatch(reference: dict[int, RunMetrics], ours: dict[str, object]) -> str | None:
    """Why a reference sweep's full fine-tuning cannot set the targets of this sweep, whose runs'
    fields are `ours` (e.g. {"task": "code-search"}); None if it can."""
    theirs = next(iter(reference.values()))
    for what, value in ours.items():
        if getattr(theirs, what) != value:
            return f"its runs' {what} is {getattr(theirs, what)!r}, this sweep's {value!r}"
    return None


def reference_error(folder: Path, why: str) -> int:
    print(f"time_to_quality: error: --reference {folder}: {why}", file=sys.stderr)
    return USER_ERROR_EXIT


def budget_label(by_seed: dict[int, RunMetrics]) -> str:
    """How long a variant's runs were given: their time budget, or their mean training seconds."""
    budgets = {metrics.time_budget for metrics in by_seed.values()}
    if len(budgets) == 1 and None not in budgets:
        return f"{budgets.pop():g} s budget"
    return f"{sum(metrics.train_seconds for metrics in by_seed.values()) / len(by_seed):.0f} s trained"


if __name__ == "__main__":
    sys.exit(main())
