"""Similarity of two representations of the same inputs: RSA and linear CKA.

Both take `x` of shape (N, D1) and `y` of shape (N, D2): row i of each is the (already pooled)
representation of input i, say one layer of a pre-trained and of a fine-tuned model. Both are
computed in float64 on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

Matrix = np.ndarray | torch.Tensor

MIN_INPUTS = 3  # RSA needs at least 3 pairs of inputs for a rank correlation


def rsa(x: Matrix, y: Matrix) -> float:
    """Representational similarity analysis, as Shi et al. (ISSTA 2023) compare layers.

    L2-normalise every row, build each representation's N×N cosine-similarity matrix, and return
    the Spearman correlation of the two matrices' strict upper triangles (ties get average
    ranks, as `scipy.stats.spearmanr` gives them). 1 means the inputs' similarity ranking is
    unchanged; the result is NaN when either triangle is constant.
    """
    x, y = _paired_matrices(x, y)
    upper = np.triu_indices(x.shape[0], k=1)
    x_cosines = _cosine_matrix(x)[upper]
    y_cosines = _cosine_matrix(y)[upper]
    return float(spearmanr(x_cosines, y_cosines).statistic)


def linear_cka(x: Matrix, y: Matrix) -> float:
    """Linear centred kernel alignment (Kornblith et al., ICML 2019, eq. 5).

    With the columns of `x` and `y` centred: ||YᵀX||_F² / (||XᵀX||_F · ||YᵀY||_F). It lies in
    [0, 1], is 1 for identical representations and is invariant to orthogonal transforms and
    isotropic scaling of either side.
    """
    x, y = _paired_matrices(x, y)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x, "fro") ** 2
    return float(cross / (np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")))


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
