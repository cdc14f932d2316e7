import numpy as np
import pytest

from telly.metrics import gold_ranks, retrieval_metrics


def test_ranks_and_metrics_on_a_hand_computed_case():
    # Query 0: gold (col 0) is best → rank 1. Query 1: cols 0 and 2 beat gold → rank 3.
    # Query 2: both other columns beat gold → rank 3.
    scores = np.array([
        [0.9, 0.1, 0.2],
        [0.8, 0.5, 0.7],
        [0.6, 0.4, 0.3],
    ])
    assert gold_ranks(scores).tolist() == [1, 3, 3]
    metrics = retrieval_metrics(scores)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)
    assert metrics["r@1"] == pytest.approx(1 / 3)
    assert metrics["r@5"] == metrics["r@10"] == 1.0


def test_recall_at_5_and_10_with_a_long_candidate_list():
    # 12 candidates; the gold of query 0 is 6th best, of query 1 is 11th best.
    row0 = np.arange(12, dtype=float)[::-1].copy()  # col 0 best, col 11 worst
    row1 = row0.copy()
    gold = np.array([5, 10])
    metrics = retrieval_metrics(np.stack([row0, row1]), gold)
    assert gold_ranks(np.stack([row0, row1]), gold).tolist() == [6, 11]
    assert metrics["mrr"] == pytest.approx((1 / 6 + 1 / 11) / 2)
    assert (metrics["r@1"], metrics["r@5"], metrics["r@10"]) == (0.0, 0.0, 0.5)


def test_ties_count_against_the_gold_candidate():
    # A model that scores everything alike must not get MRR 1.
    scores = np.zeros((4, 4))
    assert gold_ranks(scores).tolist() == [4, 4, 4, 4]
    assert retrieval_metrics(scores)["mrr"] == pytest.approx(0.25)
