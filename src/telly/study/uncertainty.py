"""How sure the study's numbers are: 95% percentile bootstrap intervals.

A probe's score is the mean of per-item scores over its test items (a token's or a function's
correctness, a query's reciprocal rank or average precision at R); `bootstrap_interval` resamples
those items, or whole clusters of them where items are not independent (the tokens of one
function). The similarity measures resample inputs instead (`telly.study.similarity`) and share
`percentile_interval` and `resample_counts`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 1000

Interval = tuple[float, float]


def bootstrap_interval(
    item_scores: Sequence[float] | np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    clusters: Sequence[int] | np.ndarray | None = None,
) -> Interval:
    """The 95% percentile bootstrap interval of the mean of `item_scores`.

    Each of `resamples` resamples draws as many items as there are, with replacement, and takes
    their mean. With `clusters` (one id per item), whole clusters are drawn instead, as many as
    there are, and the statistic is the mean over all items of the drawn clusters: items of one
    cluster are correlated, and resampling them one by one would make the interval too narrow.
    Deterministic for a seed.
    """
    scores = np.asarray(item_scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of item scores, got shape {scores.shape}")
    if clusters is None:
        sums, counts = scores, np.ones_like(scores)
    else:
        _, cluster_index = np.unique(np.asarray(clusters), return_inverse=True)
        sums, counts = np.bincount(cluster_index, weights=scores), np.bincount(cluster_index)
    draws = resample_counts(len(sums), resamples, seed)  # (resamples, units): how often each is drawn
    return percentile_interval(draws @ sums / (draws @ counts))


def resample_counts(units: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, units): how many times each unit is drawn in each bootstrap resample of `units` draws."""
    if resamples < 1:
        raise ValueError(f"need at least one resample, got {resamples}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, units, size=(resamples, units))
    return np.stack([np.bincount(row, minlength=units) for row in draws]).astype(np.float64)


def percentile_interval(statistics: Sequence[float] | np.ndarray) -> Interval | None:
    """The central CONFIDENCE interval of bootstrap statistics (numpy's linear interpolation).

    A resample whose statistic is undefined (NaN: an RSA of a resample that drew two distinct
    inputs has one pair, no ranking) is left out; None when no resample is defined."""
    statistics = np.asarray(statistics, dtype=np.float64)
    statistics = statistics[np.isfinite(statistics)]
    if not statistics.size:
        return None
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(statistics, [tail, 100 - tail])
    return float(low), float(high)
