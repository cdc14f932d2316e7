"""Task metrics, as REFERENCE.md defines them. Plain functions over arrays and lists."""

from __future__ import annotations

import numpy as np

RECALL_CUTOFFS = (1, 5, 10)


def gold_ranks(scores: np.ndarray, gold: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each query's gold candidate in its row of `scores` (higher = better).

    `gold[i]` is the column of query i's correct candidate (default: the diagonal). Ties count
    against the gold candidate, so a model that scores everything alike cannot look good.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a (queries x candidates) matrix, got shape {scores.shape}")
    gold = np.arange(scores.shape[0]) if gold is None else np.asarray(gold)
    gold_scores = scores[np.arange(scores.shape[0]), gold]
    return (scores >= gold_scores[:, None]).sum(axis=1)


def retrieval_metrics(scores: np.ndarray, gold: np.ndarray | None = None) -> dict[str, float]:
    """MRR and recall@1/5/10 of ranking every candidate for every query."""
    ranks = gold_ranks(scores, gold)
    metrics = {"mrr": float(np.mean(1.0 / ranks))}
    for k in RECALL_CUTOFFS:
        metrics[f"r@{k}"] = float(np.mean(ranks <= k))
    return metrics
