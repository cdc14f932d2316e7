"""Similarity of two representations of the same inputs: RSA and linear CKA, with bootstrap intervals.

Both take `x` of shape (N, D1) and `y` of shape (N, D2): row i of each is the (already pooled)
representation of input i, say one layer of a pre-trained and of a fine-tuned model. Both are
computed in float64 on the CPU, from N×N matrices (cosines for RSA, Gram matrices for CKA), so
that `similarity_intervals` can recompute them for a bootstrap resample of the inputs by
weighting the N inputs by how often the resample draws each, without building the copies.
"""

from __future__ import annotations

import numpy as np
import torch

from telly.study.uncertainty import Interval, percentile_interval, resample_counts

Matrix = np.ndarray | torch.Tensor

MIN_INPUTS = 3  # RSA needs at least 3 pairs of inputs for a rank correlation
DEFAULT_RESAMPLES = 200  # each resample costs a few N² operations per layer


def rsa(x: Matrix, y: Matrix) -> float:
    """Representational similarity analysis, as Shi et al. (ISSTA 2023) compare layers.

    L2-normalise every row, build each representation's N×N cosine-similarity matrix, and return
    the Spearman correlation of the two matrices' strict upper triangles (ties get average
    ranks, as `scipy.stats.spearmanr` gives them). 1 means the inputs' similarity ranking is
    unchanged; the result is NaN when either triangle is constant.
    """
    return _Rsa(*_paired_matrices(x, y)).weighted(np.ones(len(x)))


def linear_cka(x: Matrix, y: Matrix) -> float:
    """Linear centred kernel alignment (Kornblith et al., ICML 2019, eq. 5).

    With the columns of `x` and `y` centred: ||YᵀX||_F² / (||XᵀX||_F · ||YᵀY||_F). It lies in
    [0, 1], is 1 for identical representations and is invariant to orthogonal transforms and
    isotropic scaling of either side.
    """
    return _Cka(*_paired_matrices(x, y)).weighted(np.ones(len(x)))


def similarity_intervals(x: Matrix, y: Matrix, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Interval]:
    """95% bootstrap intervals of `rsa` and `linear_cka`, resampling the N inputs with replacement.

    A resample that draws input i c_i times stands for the list of those copies. A pair of two
    copies of one input is left out: it is the same input on both sides whatever the models, and
    would pull both measures up (with it, the intervals of CKA miss the point estimate). Every
    other pair of inputs i < j stands for c_i·c_j pairs of copies; the Spearman correlation over
    those comes exactly from the ranks of the N(N-1)/2 distinct pairs, and CKA from the two N×N
    Gram matrices.
    """
    x, y = _paired_matrices(x, y)
    measures = {"rsa": _Rsa(x, y), "cka": _Cka(x, y)}
    draws = resample_counts(len(x), resamples, seed)
    return {name: percentile_interval([measure.weighted(counts) for counts in draws]) for name, measure in measures.items()}


class _Rsa:
    """RSA of x and y when input i counts `counts[i]` times (pairs of an input with its own copy left out)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.first, self.second = np.triu_indices(x.shape[0], k=1)
        self.ties = [_TieGroups(_cosine_matrix(side)[self.first, self.second]) for side in (x, y)]

    def weighted(self, counts: np.ndarray) -> float:
        weights = counts[self.first] * counts[self.second]  # copies of pair (i, j): c_i · c_j
        x_ranks, y_ranks = (ties.average_ranks(weights) for ties in self.ties)
        return _weighted_correlation(x_ranks, y_ranks, weights)


class _TieGroups:
    """Values sorted once into groups of equal values, so that their average ranks can be
    computed for any number of copies of each value in O(number of values)."""

    def __init__(self, values: np.ndarray):
        order = np.argsort(values, kind="stable")
        starts = np.r_[True, values[order][1:] != values[order][:-1]]
        self.group = np.empty(len(values), dtype=np.int64)
        self.group[order] = np.cumsum(starts) - 1
        self.groups = int(starts.sum())

    def average_ranks(self, copies: np.ndarray) -> np.ndarray:
        """The average rank (1-based, ascending) each value's copies get among all copies."""
        group_copies = np.bincount(self.group, weights=copies, minlength=self.groups)
        ranks_before = np.cumsum(group_copies) - group_copies
        return (ranks_before + (group_copies + 1) / 2)[self.group]


def _weighted_correlation(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> float:
    """Pearson's correlation of a and b where value k counts weights[k] times; NaN if either is constant."""
    total = weights.sum()
    a = a - weights @ a / total
    b = b - weights @ b / total
    variances = (weights @ (a * a)) * (weights @ (b * b))
    return float(weights @ (a * b) / np.sqrt(variances)) if variances > 0 else float("nan")


class _Cka:
    """Linear CKA of x and y when input i counts `counts[i]` times, from the Gram matrices.

    With the copies centred at their mean m, ||YᵀX||_F² = Σ_ab Kx_ab Ky_ab over all pairs of copies
    (K: the Gram matrices of the centred copies), = Σ_ij c_i c_j Kx_ij Ky_ij. The pairs of two
    different copies of one input (c_i² - c_i of them) are left out, as for RSA.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.grams = (x @ x.T, y @ y.T)

    def weighted(self, counts: np.ndarray) -> float:
        shares = counts / counts.sum()
        kx, ky = (_centred_gram(gram, shares) for gram in self.grams)
        copy_pairs = counts * counts - counts

        def alignment(a: np.ndarray, b: np.ndarray) -> float:
            return counts @ (a * b) @ counts - copy_pairs @ (np.diagonal(a) * np.diagonal(b))

        return float(alignment(kx, ky) / np.sqrt(alignment(kx, kx) * alignment(ky, ky)))


def _centred_gram(gram: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """The Gram matrix of the rows after subtracting their mean weighted by `shares` (summing to 1)."""
    row_means = gram @ shares
    return gram - row_means[:, None] - row_means[None, :] + shares @ row_means


def _paired_matrices(x: Matrix, y: Matrix) -> tuple[np.ndarray, np.ndarray]:
    """`x` and `y` as float64 arrays, after checking they are 2-D with the same N ≥ 3 rows."""
    x, y = _as_float64(x), _as_float64(y)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"expected two 2-D (N, D) matrices, got shapes {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of rows, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < MIN_INPUTS:
        raise ValueError(f"need at least {MIN_INPUTS} inputs, got {x.shape[0]}")
    return x, y


def _as_float64(matrix: Matrix) -> np.ndarray:
    if isinstance(matrix, torch.Tensor):
        return matrix.detach().cpu().to(torch.float64).numpy()
    return np.asarray(matrix, dtype=np.float64)


def _cosine_matrix(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("a row is all zeros; its cosine similarity is undefined")
    unit = matrix / norms
    return unit @ unit.T
