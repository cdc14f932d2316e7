"""Time to quality: how long each variant of a sweep over seeds needs to come close to full
fine-tuning's best validation score, with 95% intervals over the seeds.

A run's curve is its best validation score so far against its training seconds (what a run that
keeps its best checkpoint has at that time). For each seed, the target is full fine-tuning's best
validation score minus `within` (1 point: 0.01 on a 0–1 metric); "full's time" is full's whole
training time for that seed, and "full's time to target" the time full's own curve took to reach
the target: trained until its score stops improving, full's whole time includes the epochs that
only confirm the plateau, so the second ratio is what a user gains by switching. Every number is
computed per seed, then given as the mean over seeds with a Student-t interval
(telly.metrics.t_interval); test scores are also compared with full's seed by seed.

The full fine-tuning that sets the targets need not be one of the compared runs: variants trained
with half its time budget are measured against the full fine-tuning of the whole budget
(`reference`), their own full fine-tuning among them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from telly.metrics import t_interval
from telly.run_folder import RunMetrics

FRACTIONS_OF_FULL = (0.25, 0.5, 1.0)
FULL = "full"
RELATIVE_TO_REFERENCE = ("fraction_of_full_time_to_target", "test_delta_vs_full")


@dataclass(frozen=True)
class Curve:
    """A run's validations: training seconds and the valid score at each, in order."""

    seconds: list[float]
    scores: list[float]

    @classmethod
    def of(cls, metrics: RunMetrics) -> Curve:
        return cls([entry["train_seconds"] for entry in metrics.history],
                   [entry["valid"][metrics.selection_metric] for entry in metrics.history])

    def best_at(self, seconds: float) -> float | None:
        """The best valid score of the validations at or before `seconds`; None before the first."""
        seen = [score for at, score in zip(self.seconds, self.scores) if at <= seconds]
        return max(seen) if seen else None

    def seconds_to_reach(self, target: float) -> float | None:
        """The training seconds of the first validation at or above `target`; None if none is."""
        return next((at for at, score in zip(self.seconds, self.scores) if score >= target), None)


def summarize(runs: dict[str, dict[int, RunMetrics]], within: float = 0.01, reference: str = FULL) -> dict:
    """`runs[variant][seed]` (the full fine-tuning `reference` among them) → per variant, over the
    seeds that the reference has too: seconds to come within `within` of the reference's best valid
    score (and that time as a fraction of the reference's training time and of the reference's own
    time to the target), the best valid score at 25%, 50% and 100% of the reference's training
    seconds, the test score, its difference from the reference's test score, and the training steps
    per second (how the cost of a step compares, and whether the machine ran at the same speed for
    runs made at different times); each with per-seed values, mean and 95% interval."""
    full = runs[reference]
    summary = {}
    for variant, by_seed in runs.items():
        seeds = sorted(set(by_seed) & set(full))
        per_seed = {name: [] for name in ("seconds_to_target", "fraction_of_full_time",
                                          "fraction_of_full_time_to_target", "test", "test_delta_vs_full",
                                          "steps_per_second",
                                          *(f"valid_at_{fraction:g}_of_full" for fraction in FRACTIONS_OF_FULL))}
        for seed in seeds:
            curve, full_curve, full_seconds = Curve.of(by_seed[seed]), Curve.of(full[seed]), full[seed].train_seconds
            target = max(full_curve.scores) - within
            reached, full_reached = curve.seconds_to_reach(target), full_curve.seconds_to_reach(target)
            per_seed["seconds_to_target"].append(reached)
            per_seed["fraction_of_full_time"].append(None if reached is None else reached / full_seconds)
            per_seed["fraction_of_full_time_to_target"].append(None if reached is None else reached / full_reached)
            for fraction in FRACTIONS_OF_FULL:
                per_seed[f"valid_at_{fraction:g}_of_full"].append(curve.best_at(fraction * full_seconds))
            per_seed["test"].append(by_seed[seed].selection_score)
            per_seed["test_delta_vs_full"].append(by_seed[seed].selection_score - full[seed].selection_score)
            per_seed["steps_per_second"].append(by_seed[seed].steps / by_seed[seed].train_seconds)
        summary[variant] = {"seeds": seeds, "reference": variant == reference,
                            **{name: _over_seeds(values) for name, values in per_seed.items()}}
    return summary


def _over_seeds(values: list[float | None]) -> dict:
    """Per-seed values, and their mean and 95% interval when every seed has one."""
    complete = [value for value in values if value is not None]
    if len(complete) < len(values) or not values:
        return {"per_seed": values, "mean": None, "interval": None, "missing": len(values) - len(complete)}
    return {"per_seed": values, "mean": float(np.mean(values)), "interval": t_interval(values), "missing": 0}


def markdown(summary: dict, metric: str, within: float) -> str:
    lines = [
        f"Valid {metric}: seconds to come within {within:g} of full fine-tuning's best (mean over seeds, "
        "95% t-interval), that time as a fraction of full's training time and of full's own time to the "
        "target, the best valid score at 25%, 50% and 100% of full's training time, the test score, its "
        "difference from full's (paired by seed), and training steps per second.",
        "",
        "| variant | seeds | seconds to target | × full's time | × full's time to target | valid at 25% "
        "| valid at 50% | valid at 100% | test | test Δ vs full | steps/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, row in summary.items():
        # the reference against itself is 1x and 0 by definition, not a measurement
        cells = ["–" if row["reference"] and name in RELATIVE_TO_REFERENCE else
                 _cell(row[name], "not validated by then" if name.startswith("valid_at") else "not reached")
                 for name in ("seconds_to_target", "fraction_of_full_time", "fraction_of_full_time_to_target",
                              "valid_at_0.25_of_full", "valid_at_0.5_of_full", "valid_at_1_of_full", "test",
                              "test_delta_vs_full", "steps_per_second")]
        lines.append(f"| {variant} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(over_seeds: dict, missing: str) -> str:
    if over_seeds["mean"] is None:
        return f"{missing} in {over_seeds['missing']} of {len(over_seeds['per_seed'])} seeds"
    interval = over_seeds["interval"]
    return f"{over_seeds['mean']:.4g}" + (f" [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else "")


def plot(path: Path, runs: dict[str, dict[int, RunMetrics]], metric: str, title: str) -> None:
    """Best valid score so far against training seconds: per variant the mean over seeds as a line
    and the lowest-to-highest seed as a band."""
    from telly.study.plots import plot_bands

    series = {}
    for variant, by_seed in runs.items():
        curves = [Curve.of(metrics) for metrics in by_seed.values()]
        grid = np.unique(np.concatenate([curve.seconds for curve in curves]))
        # From the time every seed has validated once, so that each point averages all seeds.
        grid = grid[grid >= max(curve.seconds[0] for curve in curves)]
        values = np.array([[curve.best_at(at) for at in grid] for curve in curves], dtype=np.float64)
        series[f"{variant} ({len(curves)} seeds)"] = (grid, values.mean(axis=0), values.min(axis=0), values.max(axis=0))
    plot_bands(path, series, "training seconds (evaluation not counted)", f"best valid {metric} so far", title)
