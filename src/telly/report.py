"""Side-by-side reports of finished runs (quality, parameters, time, memory), read from their metrics.json.

`comparison_table` is the paper's RQ3 table as Markdown; `write_report` adds the same table as JSON
and HTML, plots of the selection metric and of seconds per epoch against K, and of validation
quality against training time (the comparison at equal time that `--time-budget` runs are for).
When variants ran with several seeds, `seeds_table` gives each variant's mean with a 95% interval
and its difference from full fine-tuning, paired by seed, marked significant only when that
difference's interval excludes 0 (one seed is not evidence: batch orders alone move MRR by a point).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from telly.config import FULL_FINETUNING
from telly.errors import UserError
from telly.files import atomic_write_text, write_json
from telly.metrics import t_interval
from telly.run_folder import METRICS_FILE, RunMetrics, is_finished, read_metrics

REPORT_FILES = ("report.md", "report.html", "report.json", "metric_vs_k.png", "seconds_vs_k.png", "quality_vs_time.png")
FREEZING_PLOT = "freezing.png"  # also written when a run froze its blocks progressively


@dataclass(frozen=True)
class Run:
    """A finished run as a report shows it: its folder's name and its metrics."""

    name: str
    metrics: RunMetrics


def load_run(folder: Path) -> Run:
    return Run(Path(folder).name, read_metrics(folder))


def sweep_runs(folder: Path) -> list[Path]:
    """The finished run folders inside a sweep folder: full, K = 0, 1, ..., LoRA; each by seed."""
    runs = [path.parent for path in Path(folder).glob(f"*/{METRICS_FILE}")]
    if not runs:
        raise UserError(f"{folder} is neither a finished run nor a sweep holding finished runs")

    def order(run: Path) -> tuple:
        metrics = read_metrics(run)
        return metrics.method == "lora", metrics.freeze, metrics.seed or 0, run.name

    return sorted(runs, key=order)


def expand_run_folders(folders: list[Path]) -> list[Path]:
    """Run folders as given; a sweep folder stands for the runs inside it."""
    expanded = []
    for folder in folders:
        expanded += [folder] if is_finished(folder) else sweep_runs(folder)
    return expanded


def comparison_table(runs: list[Run]) -> str:
    """A Markdown table, one row per run; Δ and speedup are relative to the full fine-tuning run (K=-1)
    of the same seed, or to the first full fine-tuning run where none has that seed."""
    return _markdown(_table_rows(runs))


def _markdown(rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(row) + " |" for row in [rows[0], ["---"] * len(rows[0]), *rows[1:]]) + "\n"


def _table_rows(runs: list[Run]) -> list[list[str]]:
    if not runs:
        raise UserError("no runs to compare")
    tasks = {run.metrics.task for run in runs}
    if len(tasks) > 1:
        raise UserError(f"runs of different tasks cannot share a table: {', '.join(sorted(tasks))}")
    metric_names = list(runs[0].metrics.test)
    selection = runs[0].metrics.selection_metric
    fulls = [run.metrics for run in runs if variant(run.metrics) == "full"]
    full_of_seed = {}
    for metrics in fulls:
        full_of_seed.setdefault(metrics.seed, metrics)
    header = ["run", "variant", f"zero-shot {selection}", *metric_names, f"Δ {selection} vs full",
              "trainable / total params", "s/epoch (1st)", "s/epoch (later)", "speedup vs full", "best epoch",
              "steps", "device", "peak RSS (MB)", "peak device memory (MB)"]
    rows = [header]
    for run in runs:
        name, metrics = run.name, run.metrics
        params = metrics.params
        first, later = epoch_seconds(metrics)
        full = full_of_seed.get(metrics.seed, fulls[0] if fulls else None)
        rows.append([
            name,
            variant(metrics),
            f"{metrics.zero_shot_test[selection]:.4f}" if metrics.zero_shot_test else "n/a",
            *(f"{metrics.test[metric]:.4f}" for metric in metric_names),
            f"{metrics.selection_score - full.selection_score:+.4f}" if full else "n/a",
            f"{params['trainable'] / 1e6:.2f}M / {params['total'] / 1e6:.2f}M ({params['percent_trainable']:.1f}%)",
            _number(first, ".1f"),
            _number(later, ".1f"),
            f"{speedup(full, metrics):.2f}x" if full else "n/a",
            str(metrics.best_epoch),
            _number(metrics.steps, "d"),
            device(metrics),
            _number(metrics.peak_rss_mb, ".0f"),
            _number(metrics.peak_device_memory_mb, ".0f"),
        ])
    return rows


def seeds_table(runs: list[Run]) -> list[list[str]] | None:
    """Rows (header first) per variant over its seeds: the mean selection metric with a 95% interval,
    and the difference from full fine-tuning paired by seed; None when no variant ran with two seeds."""
    by_variant: dict[str, dict[int | None, RunMetrics]] = {}
    for run in runs:  # the first run of a variant and seed counts, as in comparison_table
        by_variant.setdefault(variant(run.metrics), {}).setdefault(run.metrics.seed, run.metrics)
    if all(len(seeds) < 2 for seeds in by_variant.values()):
        return None
    selection = runs[0].metrics.selection_metric
    full = by_variant.get("full", {})
    rows = [["variant", "seeds", f"{selection}: mean [95% interval]", f"Δ {selection} vs full: mean [95% interval]",
             "significant"]]
    for label, seeds in by_variant.items():
        scores = [metrics.selection_score for metrics in seeds.values()]
        differences = [metrics.selection_score - full[seed].selection_score for seed, metrics in seeds.items()
                       if seed in full]
        interval = t_interval(differences)
        rows.append([
            label, ", ".join(str(seed) for seed in seeds), _mean_and_interval(scores),
            _mean_and_interval(differences, sign=True) if label != "full" and differences else "n/a",
            "n/a" if label == "full" or interval is None else "yes" if interval[0] > 0 or interval[1] < 0 else "no",
        ])
    return rows


def _mean_and_interval(values: list[float], sign: bool = False) -> str:
    spec = "+.4f" if sign else ".4f"
    interval = t_interval(values)
    mean = format(float(np.mean(values)), spec)
    return mean if interval is None else f"{mean} [{format(interval[0], spec)}, {format(interval[1], spec)}]"


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def device(metrics: RunMetrics) -> str:
    """"cuda:0 (NVIDIA H200), bf16" — where the run trained; "n/a" for runs older than the field."""
    if metrics.device is None:
        return "n/a"
    where = f"{metrics.device} ({metrics.device_name})" if metrics.device_name else metrics.device
    return where if metrics.precision == "no" else f"{where}, {metrics.precision}"


def epoch_seconds(metrics: RunMetrics) -> tuple[float | None, float | None]:
    """Seconds of the first epoch, and the mean of the later ones (None where there are none: a
    time-budget run may stop before an epoch ends)."""
    seconds = metrics.epoch_seconds
    return (seconds[0] if seconds else None), (float(np.mean(seconds[1:])) if len(seconds) > 1 else None)


def speedup(full: RunMetrics, run: RunMetrics) -> float:
    """Full fine-tuning's seconds per epoch over the run's: later epochs when both have them (the
    steady state, after a cache is filled), else the first; steps per training second when an
    epoch is missing (runs stopped by a time budget)."""
    full_first, full_later = epoch_seconds(full)
    first, later = epoch_seconds(run)
    if full_later is not None and later is not None:
        return full_later / later
    if full_first is not None and first is not None:
        return full_first / first
    return (run.steps / run.train_seconds) / (full.steps / full.train_seconds)


def variant(metrics: RunMetrics) -> str:
    """"full", "K=3", "progressive" or "LoRA" — what was trained."""
    if metrics.method == "lora":
        return "LoRA"
    if metrics.progressive is not None:  # also a progressive run that never froze
        return "progressive"
    return "full" if metrics.freeze == FULL_FINETUNING else f"K={metrics.freeze}"


def write_report(runs: list[Run], out: Path, title: str) -> str:
    """Write REPORT_FILES (and FREEZING_PLOT when it applies) into `out`; return the Markdown."""
    tables = {"": _table_rows(runs)}
    markdown = f"# {title}\n\n{_markdown(tables[''])}"
    over_seeds = seeds_table(runs)
    if over_seeds:
        tables["Over seeds"] = over_seeds
        markdown += f"\n## Over seeds\n\n{_markdown(over_seeds)}"
    write_json(out / "report.json", {"title": title, "runs": [{"name": run.name, **run.metrics.to_dict()} for run in runs]})
    atomic_write_text(out / "report.md", markdown)
    _plot_against_k(runs, out)
    _plot_against_time(runs, out)
    images = [name for name in REPORT_FILES if name.endswith(".png")] + ([FREEZING_PLOT] if _plot_freezing(runs, out) else [])
    atomic_write_text(out / "report.html", _html(title, tables, images))
    return markdown


def _html(title: str, tables: dict[str, list[list[str]]], images: list[str]) -> str:
    """The tables (name → rows, header first; an unnamed one has no heading) and the plots as a page."""
    def cells(row, tag):
        return "".join(f"<{tag}>{html.escape(cell)}</{tag}>" for cell in row)

    sections = "".join(
        (f"<h2>{html.escape(name)}</h2>\n" if name else "") + f"<table>\n<tr>{cells(rows[0], 'th')}</tr>\n"
        + "\n".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows[1:]) + "\n</table>\n"
        for name, rows in tables.items()
    )
    images = "".join(f'<p><img src="{name}" alt="{name}"></p>' for name in images)
    return (
        f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px 8px;text-align:right}</style>"
        f"</head><body>\n<h1>{html.escape(title)}</h1>\n{sections}{images}\n</body></html>\n"
    )


def _plot_against_k(runs: list[Run], out: Path) -> None:
    """Test metric and seconds per epoch against K; runs of one K with several seeds are averaged."""
    from telly.study.plots import plot_points

    first = runs[0].metrics
    by_k: dict[int, list[RunMetrics]] = {}
    for run in runs:
        if run.metrics.method != "lora":
            by_k.setdefault(run.metrics.freeze, []).append(run.metrics)
    ks = sorted(by_k)
    metric = {"Telly-K (K=-1: full)": (ks, [np.mean([m.selection_score for m in by_k[k]]) for k in ks])}
    lora = [run.metrics.selection_score for run in runs if run.metrics.method == "lora"]
    metric |= {"LoRA": (ks, [np.mean(lora)] * len(ks))} if lora and ks else {}
    seconds = {}
    for label, which in (("first epoch", 0), ("later epochs", 1)):
        per_k = [[epoch_seconds(metrics)[which] for metrics in by_k[k]] for k in ks]
        if all(value is not None for values in per_k for value in values):
            seconds[label] = (ks, [np.mean(values) for values in per_k])
    plot_points(out / "metric_vs_k.png", metric, "K (frozen blocks; -1 = full fine-tuning)",
                f"test {first.selection_metric}", f"{first.task}: quality vs K")
    plot_points(out / "seconds_vs_k.png", seconds, "K (frozen blocks; -1 = full fine-tuning)", "seconds per epoch",
                f"{first.task}: time vs K")


def _plot_against_time(runs: list[Run], out: Path) -> None:
    """Validation quality at each evaluation against the training seconds spent so far, one line per run."""
    from telly.study.plots import plot_points

    first = runs[0].metrics
    series = {
        run.name: ([entry["train_seconds"] for entry in run.metrics.history],
                   [entry["valid"][first.selection_metric] for entry in run.metrics.history])
        for run in runs
        if all("train_seconds" in entry for entry in run.metrics.history)
    }
    plot_points(out / "quality_vs_time.png", series, "training seconds (evaluation not counted)",
                f"valid {first.selection_metric}", f"{first.task}: quality vs training time")


def _plot_freezing(runs: list[Run], out: Path) -> bool:
    """K against training seconds for the progressive runs (one that never froze: a flat line at
    -1); whether there was one."""
    from telly.study.plots import plot_points

    series = {}
    for run in runs:
        if run.metrics.progressive is not None:
            seconds, ks = [0.0], [FULL_FINETUNING]  # a staircase: K holds until the next freezing
            for event in run.metrics.progressive:
                seconds += [event["train_seconds"]] * 2
                ks += [ks[-1], event["k"]]
            series[run.name] = (seconds + [run.metrics.train_seconds], ks + [ks[-1]])
    if series:
        plot_points(out / FREEZING_PLOT, series, "training seconds (evaluation not counted)",
                    "K (frozen blocks; -1 = none)", f"{runs[0].metrics.task}: progressive freezing")
    return bool(series)
