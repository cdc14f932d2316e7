import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score  # an independent reference (a dependency)

from telly.metrics import (
    average_precisions_at_r,
    best_threshold,
    classification_metrics,
    codexglue_tokens,
    corpus_bleu4,
    edit_similarity,
    exact_match,
    gold_ranks,
    map_at_r,
    precision_recall_f1,
    random_ranking_map_at_r,
    rank_metrics,
    ranked_candidates,
    ranks_in,
    retrieval_metrics,
    smoothed_bleu4,
)


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


def test_a_written_ranking_puts_the_gold_candidate_at_its_rank():
    scores = np.array([
        [0.9, 0.1, 0.2, 0.5],  # gold best: [0, 3, 2, 1]
        [0.8, 0.5, 0.7, 0.5],  # a tie with col 3 counts against the gold (col 1): [0, 2, 3, 1]
        [0.6, NAN, 0.3, 0.1],  # a NaN rival ranks ahead: [1, 0, 2, 3]
    ])
    rankings = ranked_candidates(scores)
    assert rankings.tolist() == [[0, 3, 2, 1], [0, 2, 3, 1], [1, 0, 2, 3]]
    assert ranks_in(rankings, [0, 1, 2]).tolist() == gold_ranks(scores).tolist() == [1, 4, 3]
    assert rank_metrics(ranks_in(rankings, [0, 1, 2])) == retrieval_metrics(scores)


def test_ranking_metrics_equal_the_score_metrics_on_random_and_tied_scores():
    generator = np.random.default_rng(0)
    scores = generator.integers(0, 4, size=(30, 30)).astype(float)  # many ties
    assert rank_metrics(ranks_in(ranked_candidates(scores), range(30))) == retrieval_metrics(scores)
    assert ranks_in([[2, 1]], [0]).tolist() == [np.inf] and rank_metrics(np.array([np.inf]))["mrr"] == 0.0


# --- MAP@R (CodeXGLUE POJ-104) ------------------------------------------------------------------


def test_map_at_r_by_hand():
    # Items 0, 1, 2 form group 7 (R = 2 each); item 3 is alone (skipped as a query).
    scores = np.array([
        [0, .9, .1, .5],  # 0: top 2 = item 1 (relevant), item 3: (1/1) / 2
        [.9, 0, .8, .1],  # 1: top 2 = items 0, 2, both relevant: (1/1 + 2/2) / 2
        [.1, .8, 0, .9],  # 2: top 2 = item 3, item 1 (relevant at rank 2): (1/2) / 2
        [.5, .1, .9, 0],
    ])
    # Full MAP would also credit item 2 found at rank 3 by query 0: ((1 + 2/3) / 2 + 1 + 7/12) / 3.
    assert map_at_r(scores, [7, 7, 7, 3]) == pytest.approx((1 / 2 + 1 + 1 / 4) / 3)
    # One average precision per query that has an R, in query order: the bootstrap resamples them.
    assert average_precisions_at_r(scores, [7, 7, 7, 3]) == pytest.approx([1 / 2, 1, 1 / 4])


def test_map_at_r_ties_count_against_the_relevant_items():
    # Each query of group 0 has R = 1; the relevant and the irrelevant item tie, so the
    # irrelevant one takes the one place that counts.
    assert map_at_r(np.ones((3, 3)), [0, 0, 1]) == 0.0
    with pytest.raises(ValueError, match="no group has two or more items"):
        map_at_r(np.ones((3, 3)), [0, 1, 2])


def _modular_scores(n, a, b, m):
    """(i * a + j * b) mod m, scaled to 0..1: no two items tie within a row while n <= m (m prime)."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return ((i * a + j * b) % m) / m


_UNEVEN_GROUPS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 4, 4, 4, 0, 1, 2, 5, 5])  # 3 is alone
_TRIPLES = np.arange(21) // 3


def _same_group(groups):
    return groups[:, None] == groups[None, :]


@pytest.mark.parametrize(
    "scores, groups, expected",
    [
        (_modular_scores(20, 31, 17, 97), _UNEVEN_GROUPS, 0.08223684210526315),
        (_modular_scores(21, 7, 41, 101), _TRIPLES, 0.09523809523809523),
        (_modular_scores(20, 13, 29, 89), _UNEVEN_GROUPS, 0.08552631578947367),
        (_modular_scores(20, 31, 17, 97) + 0.6 * _same_group(_UNEVEN_GROUPS), _UNEVEN_GROUPS, 0.665204678362573),
        (_modular_scores(21, 7, 41, 101) + 0.5 * _same_group(_TRIPLES), _TRIPLES, 0.5714285714285714),
    ],
)
def test_map_at_r_equals_codexglue_poj104(scores, groups, expected):
    # Expected values from a separate script that follows CodeXGLUE's POJ-104 evaluation: answers
    # as extract_answers.py makes them, each query's top R from argsort with itself pushed last
    # (run.py), scored by evaluator.py's calculate_scores (singleton groups left out).
    assert map_at_r(scores, groups) == pytest.approx(expected, abs=1e-12)


def test_random_ranking_map_at_r_is_the_mean_over_all_rankings():
    # Every ordering of 6 items, each used as every query's ranking: each query then sees each
    # ordering of its 5 others equally often, so the mean MAP@R is the exact expectation.
    groups = [0, 0, 0, 1, 1, 2]
    orderings = itertools.permutations(range(6))
    exact = np.mean([map_at_r(np.tile(np.argsort(ordering), (6, 1)), groups) for ordering in orderings])
    assert random_ranking_map_at_r(groups) == pytest.approx(exact, rel=1e-12)
    # By hand, M = 5 others: R = 2 gives (1 + 1/2 + 1/4 * 1/2) / 5 = 13/40, R = 1 gives 1/5.
    assert random_ranking_map_at_r(groups) == pytest.approx((3 * 13 / 40 + 2 / 5) / 5)


def test_random_ranking_map_at_r_matches_random_scores():
    rng = np.random.default_rng(0)
    groups = np.arange(30) // 3  # R = 2 among M = 29: (1 + 1/2 + 1/28 * 1/2) / 29
    simulated = np.mean([map_at_r(rng.random((30, 30)), groups) for _ in range(2000)])
    assert random_ranking_map_at_r(groups) == pytest.approx((1.5 + 0.5 / 28) / 29, rel=1e-12)
    assert simulated == pytest.approx(random_ranking_map_at_r(groups), abs=0.003)


# --- smoothed BLEU-4 (CodeXGLUE code-to-text) -------------------------------------------------


def test_codexglue_tokens_lowercase_and_split_punctuation_and_underscores():
    assert codexglue_tokens("Get the User's name.") == ["get", "the", "user", "'", "s", "name", "."]
    assert codexglue_tokens("a.b(c_d)") == ["a", ".", "b", "(", "c", "_", "d", ")"]
    assert codexglue_tokens("Parse __init__ args") == ["parse", "_", "_", "init", "_", "_", "args"]
    # Digits do not keep `.`, `,` or `-`, and entities stay as written: each symbol is a token.
    assert codexglue_tokens("3.5, 1,000 2-3 &lt;") == [
        "3", ".", "5", ",", "1", ",", "000", "2", "-", "3", "&", "lt", ";"
    ]


def test_smoothed_bleu4_on_a_hand_computed_two_sentence_case():
    # Sentence 1. hyp "Get the User's name." -> get the user ' s name .   (7 tokens)
    #             ref "get the user name."   -> get the user name .       (5 tokens)
    #   1-grams: get the user name . match         5/7  (not smoothed)
    #   2-grams: (get the) (the user) (name .)     3/6  -> (3+1)/(6+1) = 4/7
    #   3-grams: (get the user)                    1/5  -> (1+1)/(5+1) = 1/3
    #   4-grams: none                              0/4  -> (0+1)/(4+1) = 1/5
    #   BP: exp(min(0, 1 - (5+1)/(7+1))) = exp(0) = 1
    sentence_1 = (5 / 7 * 4 / 7 * 1 / 3 * 1 / 5) ** (1 / 4)  # 0.40615
    # Sentence 2. hyp "open file" -> open file (2); ref "Open the file" -> open the file (3)
    #   1-grams: open file match 2/2 = 1 (only because both sides are lowercased)
    #   2-grams: (open file) does not occur in the reference: 0/1 -> (0+1)/(1+1) = 1/2
    #   3- and 4-grams: the hypothesis has none: 0/0 -> (0+1)/(0+1) = 1
    #   BP: exp(min(0, 1 - (3+1)/(2+1))) = exp(-1/3)
    sentence_2 = (1 * 1 / 2 * 1 * 1) ** (1 / 4) * math.exp(-1 / 3)  # 0.60253
    expected = 100 * (sentence_1 + sentence_2) / 2  # 50.434
    score = smoothed_bleu4(["Get the User's name.", "open file"], ["get the user name.", "Open the file"])
    assert score == pytest.approx(expected, rel=1e-12)
    assert score == pytest.approx(50.434, abs=1e-3)


def test_smoothed_bleu4_does_not_smooth_unigrams():
    # hyp a b / ref a c: p1 = 1/2 (smoothed it would be 2/3), p2 = (0+1)/(1+1) = 1/2,
    # p3 = p4 = (0+1)/(0+1) = 1, BP = 1 (equal lengths): (1/2 * 1/2) ** (1/4) = 0.7071
    assert smoothed_bleu4(["a b"], ["a c"]) == pytest.approx(100 * 0.5**0.5, rel=1e-12)


def test_smoothed_bleu4_clips_repeated_ngrams_to_their_reference_count():
    # hyp the the the / ref the cat: "the" matches once, not three times -> p1 = 1/3;
    # 2-grams (the the) x2: 0/2 -> 1/3; 3-gram (the the the): 0/1 -> 1/2; no 4-gram -> 1.
    # BP: exp(min(0, 1 - 3/4)) = 1.
    assert smoothed_bleu4(["the the the"], ["the cat"]) == pytest.approx(
        100 * (1 / 3 * 1 / 3 * 1 / 2) ** (1 / 4), rel=1e-12
    )


def test_smoothed_bleu4_edge_cases():
    assert smoothed_bleu4(["return the sum of a list ."], ["return the sum of a list ."]) == 100.0
    assert smoothed_bleu4(["x"], ["x"]) == 100.0  # 2..4-grams are (0+1)/(0+1) = 1
    # Lowercasing and punctuation splitting make these identical token sequences.
    assert smoothed_bleu4(["Returns the VALUE."], ["returns the value ."]) == pytest.approx(100.0)
    assert smoothed_bleu4(["a.b"], ["a . b"]) == pytest.approx(100.0)
    # foo _ bar / foo bar: p1 = 2/3, p2 = (0+1)/(2+1), p3 = (0+1)/(1+1), p4 = (0+1)/(0+1);
    # BP = exp(min(0, 1 - 3/4)) = 1: (2/3 * 1/3 * 1/2) ** (1/4) = 1 / sqrt(3).
    assert smoothed_bleu4(["foo_bar"], ["foo bar"]) == pytest.approx(100 / math.sqrt(3), rel=1e-12)
    # No shared word: p1 = tiny / 2 (the evaluator's smallest float), so about 1e-75, not 0.
    assert 0 < smoothed_bleu4(["completely different"], ["nothing shared here"]) < 1e-70
    # An empty hypothesis: p1 = tiny / tiny = 1, p2..p4 = 1/1, BP = exp(1 - (ref_len + 1) / 1).
    assert smoothed_bleu4(["", "   "], ["some words", ""]) == pytest.approx(100 * (math.exp(-2) + 1) / 2, rel=1e-12)
    assert smoothed_bleu4(["x", ""], ["x", "y"]) == pytest.approx(100 * (1 + math.exp(-1)) / 2, rel=1e-12)


# (hypothesis, reference, CodeXGLUE's score) from a separate script that follows the code-to-text
# evaluator step by step (splitPuncts, mteval's normalize, its smoothed BLEU) and gives the same
# numbers as the evaluator itself.
CODEXGLUE_BLEU_CASES = [
    # issue 14's two measured cases: 33.52 and 37.81 while `_` was kept inside words
    ("Read the file_path.", "Return the content of file_path.", 48.0151234408109),
    ("Check __init__ arguments", "Parse __init__ args.", 59.31495015145054),
    ("Parse the __init__ args", "Call __init__ with parsed args", 54.13315838926033),
    ("Set self._cache_size", "set the cache size", 21.254504262688073),
    ("Costs 3.5 or 1,000 units.", "costs 3.5, not 1,000 units", 58.44356470407897),
    ("Pages 2-3 of the doc", "pages 2 - 3 of doc", 70.34711503007026),
    ("Version 1.2.3-beta", "version 1 . 2 . 3 - beta", 100.0),
    ("Compare a &lt; b &amp; c", "compare a < b & c", 21.3643503198117),
    ("Return &quot;x&quot;", 'Return "x"', 16.515821590069034),
    ("RETURN THE Value", "Return the value.", 77.8800783071405),
    ("Join the\nlines", "join the lines", 100.0),
    ("multi-\nline text", "multiline text", 31.94715521231363),
    ("<skipped> value", "value", 31.94715521231363),
    ("", "Return the value", 4.978706836786395),
    ("Return the value", "", 5.929498746342409e-76),
    ("", "", 100.0),
    ("completely different", "nothing shared here", 6.188085173118124e-76),
    ("Return the sum of a list.", "Return the sum of a list.", 100.0),
    ("Get the User's name.", "get the user name.", 40.61492579932463),
]


@pytest.mark.parametrize("hypothesis, reference, expected", CODEXGLUE_BLEU_CASES)
def test_smoothed_bleu4_equals_codexglue(hypothesis, reference, expected):
    assert smoothed_bleu4([hypothesis], [reference]) == pytest.approx(expected, abs=1e-6)


def test_smoothed_bleu4_of_a_corpus_equals_codexglue():
    hypotheses, references, _ = zip(*CODEXGLUE_BLEU_CASES)
    assert smoothed_bleu4(hypotheses, references) == pytest.approx(49.302979434532546, abs=1e-6)


def test_text_metrics_reject_mismatched_or_empty_inputs():
    for metric in (smoothed_bleu4, corpus_bleu4, exact_match, edit_similarity):
        with pytest.raises(ValueError, match="2 predictions but 1 references"):
            metric(["a", "b"], ["a"])
        with pytest.raises(ValueError, match="nothing to score"):
            metric([], [])


# --- corpus BLEU-4 (CONCODE, sacrebleu) ----------------------------------------------------------


def test_corpus_bleu4_pools_counts_over_the_corpus():
    # Tokens are whitespace-separated, whatever the whitespace.
    #   hyp 1 a b c d / ref 1 a b c e;  hyp 2 x y / ref 2 x y z
    #   1-grams: 3/4 + 2/2 = 5/6 (not smoothed)
    #   2-grams: (a b)(b c) of 3, (x y) of 1 = 3/4  -> (3+1)/(4+1) = 4/5
    #   3-grams: (a b c) of 2, none in hyp 2 = 1/2  -> (1+1)/(2+1) = 2/3
    #   4-grams: (a b c d) unmatched = 0/1          -> (0+1)/(1+1) = 1/2
    #   BP: hyp length 6 < ref length 7 -> exp(1 - 7/6) = exp(-1/6)
    expected = 100 * (5 / 6 * 4 / 5 * 2 / 3 * 1 / 2) ** (1 / 4) * math.exp(-1 / 6)  # 58.119
    score = corpus_bleu4(["a  b\tc\nd", "x y"], ["a b c e", " x y z "])
    assert score == pytest.approx(expected, rel=1e-9)
    assert score == pytest.approx(58.119, abs=1e-3)


def test_corpus_bleu4_does_not_split_code_tokens_and_is_case_sensitive():
    # Tokens x = a.b ; vs x = a.c ; -- `a.b` stays one token (sacrebleu's 13a would split it).
    #   1-grams 3/4; 2-grams (x =) 1/3 -> 2/4; 3-grams 0/2 -> 1/3; 4-grams 0/1 -> 1/2; BP 1
    #   (3/4 * 1/2 * 1/3 * 1/2) ** (1/4) = (1/16) ** (1/4) = 1/2
    assert corpus_bleu4(["x = a.b ;"], ["x = a.c ;"]) == pytest.approx(50.0)
    assert corpus_bleu4(["public int foo ( ) { }"], ["public int foo ( ) { }"]) == pytest.approx(100.0)
    assert corpus_bleu4(["Foo"], ["foo"]) == 0.0


# --- exact match and edit similarity (line completion, CONCODE) ---------------------------------


def test_exact_match_ignores_whitespace_layout_only():
    predictions = ["  a  b\n", "a b", "A b", "ab", "x . y"]
    references = ["a b", "a\tb", "a b", "a b", "x.y"]
    # match, match, case differs, token boundary differs, token boundary differs -> 2/5
    assert exact_match(predictions, references) == pytest.approx(40.0)
    assert exact_match(["return x ;"], ["return   x ;"]) == 100.0


def test_edit_similarity_is_the_normalised_indel_similarity():
    # kitten / sitting: longest common subsequence "ittn" = 4 characters;
    # similarity = 2 * 4 / (6 + 7) = 8/13 = 61.54. "abc" / "abc" = 100.
    assert edit_similarity(["kitten"], ["sitting"]) == pytest.approx(100 * 8 / 13)
    assert edit_similarity(["kitten", "abc"], ["sitting", "abc"]) == pytest.approx((800 / 13 + 100) / 2)
    # Surrounding whitespace is stripped, inner whitespace counts: "a b" / "ab": 2 * 2 / 5 = 80.
    assert edit_similarity([" abc\n"], ["abc"]) == 100.0
    assert edit_similarity(["a b"], ["ab"]) == pytest.approx(80.0)
    assert edit_similarity(["", "x"], ["", ""]) == pytest.approx(50.0)  # 100 and 0


# --- clone detection: precision / recall / F1 at a tuned threshold ------------------------------


def test_precision_recall_f1_on_a_hand_computed_case_and_against_sklearn():
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    predictions = [1, 0, 1, 1, 0, 0, 0, 0]
    # TP = 2 (items 0, 2), FP = 1 (item 3), FN = 2 (items 1, 6)
    # precision 2/3, recall 2/4, F1 = 2 * (2/3 * 1/2) / (2/3 + 1/2) = 4/7
    metrics = precision_recall_f1(labels, predictions)
    assert metrics == pytest.approx({"precision": 2 / 3, "recall": 1 / 2, "f1": 4 / 7})
    assert metrics == pytest.approx({
        "precision": precision_score(labels, predictions),
        "recall": recall_score(labels, predictions),
        "f1": f1_score(labels, predictions),
    })


def test_precision_recall_f1_zero_division_is_zero():
    assert precision_recall_f1([1, 0, 1], [0, 0, 0]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert precision_recall_f1([0, 0], [1, 0]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="only 0 and 1"):
        precision_recall_f1([0, 2], [0, 1])
    with pytest.raises(ValueError, match="2 predictions but 3 labels"):
        precision_recall_f1([0, 1, 1], [0, 1])


def test_best_threshold_obvious_case_and_tie_break():
    # Positives score 0.8 and 0.9, negatives 0.1 and 0.2: threshold 0.8 gives F1 = 1.
    assert best_threshold([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]) == 0.8
    # Candidates: 0.9 -> TP 1 of 1 predicted: F1 = 2/(1+2) = 2/3;  0.8 -> 2/(2+2) = 1/2;
    # 0.7 -> 2/(3+2) = 2/5;  0.6 -> 4/(4+2) = 2/3. Tie between 0.9 and 0.6: the larger wins,
    # whatever the order of the examples.
    assert best_threshold([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6]) == 0.9
    assert best_threshold([1, 0, 0, 1][::-1], [0.9, 0.8, 0.7, 0.6][::-1]) == 0.9
    assert best_threshold([0, 1, 1, 0], [0.7, 0.9, 0.6, 0.8]) == 0.9
    # No positive label: every F1 is 0, so the largest score.
    assert best_threshold([0, 0, 0], [0.3, 0.1, 0.2]) == 0.3


def test_best_threshold_agrees_with_a_brute_force_search_using_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=60)
    scores = np.round(np.clip(labels * 0.3 + rng.random(60) * 0.7, 0, 1), 1)  # many ties
    candidates = np.unique(scores)
    f1s = np.array([f1_score(labels, scores >= t) for t in candidates])
    best = candidates[np.flatnonzero(np.isclose(f1s, f1s.max()))[-1]]
    assert best_threshold(labels, scores) == best
    tuned = classification_metrics(labels, scores, best)
    assert tuned["f1"] == pytest.approx(f1s.max())
    assert tuned["threshold"] == best


def test_classification_metrics_predicts_clone_at_or_above_the_threshold():
    labels = [0, 0, 1, 1, 1]
    scores = [0.2, 0.6, 0.6, 0.4, 0.9]
    # threshold 0.6 -> predictions 0 1 1 0 1: TP 2, FP 1, FN 1 -> P = R = F1 = 2/3
    # (with "score > threshold" it would be 0 0 0 0 1: P = 1, R = 1/3)
    assert classification_metrics(labels, scores, 0.6) == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "threshold": 0.6}
    )
    with pytest.raises(ValueError, match="expected 5 scores"):
        classification_metrics(labels, scores[:4], 0.5)


# --- Scores that are not numbers (a diverged model) -----------------------------------------------

NAN = float("nan")


def test_a_model_that_outputs_nan_is_not_scored_as_perfect():
    # `scores >= NaN` is false everywhere: a gold NaN must not rank first (this gave MRR 1).
    scores = np.full((4, 4), NAN)
    assert gold_ranks(scores).tolist() == [4, 4, 4, 4]
    assert retrieval_metrics(scores) == {"mrr": 0.25, "r@1": 0.0, "r@5": 1.0, "r@10": 1.0}


def test_non_finite_scores_count_against_the_gold_candidate():
    scores = np.array([
        [NAN, 0.1, 0.2],  # gold NaN: last place
        [0.5, 0.9, NAN],  # a NaN rival ranks ahead of the gold: 2nd
        [0.1, 0.2, 0.3],  # untouched: 1st
        [0.1, np.inf, 0.3],  # an infinite rival ranks ahead too: 2nd
    ])
    assert gold_ranks(scores, gold=np.array([0, 1, 2, 2])).tolist() == [3, 2, 1, 2]


def test_map_at_r_ranks_a_nan_relevant_item_last_and_a_nan_irrelevant_item_first():
    # Query 0's group holds item 1 (R = 1). With NaN for item 1 it is not found; with NaN for the
    # irrelevant item 2 (and 1 scored well) the NaN item takes the one place that counts.
    assert map_at_r(np.array([[0, NAN, 0.1], [NAN, 0, 0.1], [0.1, 0.1, 0]]), [0, 0, 1]) == 0.0
    assert map_at_r(np.array([[0, 0.9, NAN], [0.9, 0, NAN], [NAN, NAN, 0]]), [0, 0, 1]) == 0.0
    assert map_at_r(np.array([[0, 0.9, 0.1], [0.9, 0, 0.1], [0.1, 0.1, 0]]), [0, 0, 1]) == 1.0


def test_a_pair_without_a_finite_score_is_classified_wrongly():
    labels = [1, 0, 1, 0]
    scores = [0.9, 0.1, NAN, NAN]
    # The finite pairs are separated at 0.9; the NaN clone is missed (FN) and the NaN non-clone
    # is taken for a clone (FP): TP 1, FP 1, FN 1.
    assert best_threshold(labels, scores) == 0.9
    assert classification_metrics(labels, scores, 0.9) == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "threshold": 0.9}
    )
    assert best_threshold([1, 0], [NAN, np.inf]) == 0.0  # nothing finite: a finite threshold all the same
    assert classification_metrics([1, 0], [NAN, NAN], 0.0)["f1"] == 0.0
