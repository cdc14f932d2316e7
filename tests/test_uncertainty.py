"""Bootstrap intervals: cases whose interval is known, and the similarity intervals against explicit copies."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from telly.study.similarity import linear_cka, rsa, similarity_intervals
from telly.study.uncertainty import bootstrap_interval, percentile_interval, resample_counts


def test_equal_items_give_a_zero_width_interval():
    assert bootstrap_interval([0.25] * 40, resamples=200, seed=3) == (0.25, 0.25)


def test_nine_hits_and_one_miss():
    # A resample of 10 draws misses k ~ Binomial(10, 0.1) times; its mean is 1 - k/10.
    # P(k = 0) = .349, so the upper 2.5% of means is 1.0; P(k >= 3) = .070 and P(k >= 4) = .013,
    # so the lower 2.5% falls among the resamples with k = 3: 0.7.
    assert bootstrap_interval([1] * 9 + [0], resamples=20_000, seed=0) == pytest.approx((0.7, 1.0))


def test_clusters_are_resampled_whole():
    # Tokens of two functions: A has 3 correct tokens, B 1 wrong one. Drawing two functions gives
    # AA (1/4): 1.0, AB (1/2): 0.75, BB (1/4): 0.0, so the interval is [0, 1]. Token by token, a
    # mean of 0 needs all four draws on B's token (p = 1/256): the lower end is 0.25 instead.
    scores, clusters = [1, 1, 1, 0], ["A", "A", "A", "B"]
    assert bootstrap_interval(scores, resamples=20_000, seed=0, clusters=clusters) == pytest.approx((0.0, 1.0))
    assert bootstrap_interval(scores, resamples=20_000, seed=0) == pytest.approx((0.25, 1.0))


def test_interval_contains_the_mean_and_is_deterministic():
    scores = np.random.default_rng(0).random(300)
    low, high = bootstrap_interval(scores, resamples=500, seed=1)
    assert low < scores.mean() < high
    assert high - low < 0.1  # about 4 standard errors of 0.29 / sqrt(300)
    assert bootstrap_interval(scores, resamples=500, seed=1) == (low, high)


def test_resample_counts_draw_every_unit_as_often_as_there_are_units():
    counts = resample_counts(7, resamples=50, seed=0)
    assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all()


def _explicit_copies(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """RSA and linear CKA of the resample built as explicit copies, pairs of two copies of one input left out."""
    drawn = np.repeat(np.arange(len(x)), counts.astype(int))
    same_input = drawn[:, None] == drawn[None, :]
    first, second = np.triu_indices(len(drawn), k=1)
    kept = ~same_input[first, second]

    def cosines(m):
        unit = m / np.linalg.norm(m, axis=1, keepdims=True)
        return (unit @ unit.T)[drawn][:, drawn][first[kept], second[kept]]  # from the originals' cosines: exact ties

    centred = [m[drawn] - m[drawn].mean(axis=0) for m in (x, y)]
    kx, ky = (np.where(same_input & ~np.eye(len(drawn), dtype=bool), 0.0, c @ c.T) for c in centred)
    cka = (kx * ky).sum() / np.sqrt((kx * kx).sum() * (ky * ky).sum())
    return spearmanr(cosines(x), cosines(y)).statistic, cka


def test_similarity_intervals_equal_the_measures_on_explicit_copies():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((25, 6))
    y = x + 0.8 * rng.standard_normal((25, 6))
    resamples, seed = 40, 5
    per_resample = np.array([_explicit_copies(x, y, counts) for counts in resample_counts(25, resamples, seed)])
    intervals = similarity_intervals(x, y, resamples, seed)
    expected = np.percentile(per_resample, [2.5, 97.5], axis=0)
    assert intervals["rsa"] == pytest.approx(tuple(expected[:, 0]), abs=1e-12)
    assert intervals["cka"] == pytest.approx(tuple(expected[:, 1]), abs=1e-12)
    assert intervals["rsa"][0] < rsa(x, y) < intervals["rsa"][1]
    assert intervals["cka"][0] < linear_cka(x, y) < intervals["cka"][1]


def test_identical_representations_have_a_point_interval_at_one():
    x = np.random.default_rng(1).standard_normal((20, 4))
    assert similarity_intervals(x, x, resamples=30) == {"rsa": pytest.approx((1.0, 1.0)), "cka": pytest.approx((1.0, 1.0))}


def test_undefined_resamples_are_left_out_of_the_interval():
    assert percentile_interval([float("nan")] * 3) is None
    assert percentile_interval([1.0, float("nan"), 3.0]) == pytest.approx(np.percentile([1.0, 3.0], [2.5, 97.5]))


def test_rsa_intervals_of_few_inputs_leave_out_resamples_with_a_single_pair():
    # Of 3 inputs, a resample drawing 2 distinct ones has one pair: no ranking, no correlation.
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([[1.0, 0.1], [0.2, 1.0], [1.0, 0.9]])
    draws = resample_counts(3, 50, seed=0)
    assert any((counts > 0).sum() == 2 for counts in draws)  # such resamples occur
    low, high = similarity_intervals(x, y, resamples=50, seed=0)["rsa"]
    assert np.isfinite([low, high]).all() and low <= rsa(x, y) <= high
