"""Task metrics, as REFERENCE.md defines them. Plain functions over arrays and lists.

- code search: MRR and recall@1/5/10 (`retrieval_metrics`; of a written ranking: `ranked_candidates`,
  `ranks_in`, `rank_metrics`);
- retrieval of programs that do the same thing (POJ-104, the semantic probe): MAP@R (`map_at_r`,
  and `random_ranking_map_at_r` for a ranking that knows nothing);
- code summarization: CodeXGLUE's smoothed sentence BLEU-4 (`smoothed_bleu4`);
- code generation: corpus BLEU-4 and exact match (`corpus_bleu4`, `exact_match`);
- line-level completion: exact match and edit similarity (`exact_match`, `edit_similarity`);
- clone detection: precision, recall and F1 at a threshold tuned on validation scores
  (`best_threshold`, `classification_metrics`, `precision_recall_f1`).

A score that is not a finite number (the output of a model that diverged) always counts against
the model: in a ranking it is the gold candidate's worst place and every other candidate's best,
and a pair classified by it is classified wrongly.

The text metrics take one reference per prediction, raise ValueError when the two lists differ in
length or are empty, and return percentages (0..100) like the published tables. The clone-detection
metrics return fractions (0..1), as the paper reports F1.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Sequence

import numpy as np
import sacrebleu
from rapidfuzz import fuzz

RECALL_CUTOFFS = (1, 5, 10)
BLEU_MAX_ORDER = 4
# CodeXGLUE code-to-text's tokens: runs of word characters other than `_`, or any other single
# non-space character (see `codexglue_tokens`).
_WORD_OR_SYMBOL = re.compile(r"[^\W_]+|\S")
# CodeXGLUE adds the smallest positive float inside every logarithm of its BLEU.
_LOG_GUARD = sys.float_info.min


def gold_ranks(scores: np.ndarray, gold: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each query's gold candidate in its row of `scores` (higher = better).

    `gold[i]` is the column of query i's correct candidate (default: the diagonal). Ties count
    against the gold candidate, so a model that scores everything alike cannot look good; so do
    scores that are not finite (NaN compares false with everything).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a (queries x candidates) matrix, got shape {scores.shape}")
    gold = np.arange(scores.shape[0]) if gold is None else np.asarray(gold)
    gold_scores = scores[np.arange(scores.shape[0]), gold]
    ahead = (scores >= gold_scores[:, None]) | ~np.isfinite(scores) | ~np.isfinite(gold_scores)[:, None]
    return ahead.sum(axis=1)


def ranked_candidates(scores: np.ndarray, gold: np.ndarray | None = None) -> np.ndarray:
    """Each query's candidates (column indices of `scores`), best first, with ties and scores that
    are not finite ahead of the gold candidate as `gold_ranks` counts them: the gold candidate's
    place in its row is its rank."""
    scores = np.asarray(scores, dtype=np.float64)
    rows = np.arange(scores.shape[0])
    gold = rows if gold is None else np.asarray(gold)
    gold_scores = scores[rows, gold]
    ahead = (scores >= gold_scores[:, None]) | ~np.isfinite(scores) | ~np.isfinite(gold_scores)[:, None]
    group = np.where(ahead, 0, 2)  # those ahead, the gold candidate, the rest
    group[rows, gold] = 1
    best_first = np.where(np.isfinite(scores), -scores, -np.inf)
    return np.lexsort((best_first, group), axis=-1)


def ranks_in(rankings: Sequence[Sequence[int]], gold: Sequence[int]) -> np.ndarray:
    """1-based place of each query's gold candidate in its ranking; infinite where it is missing
    (scored 0 then, as CodeXGLUE's search evaluator scores it)."""
    return np.array([list(ranking).index(answer) + 1 if answer in ranking else np.inf
                     for ranking, answer in zip(rankings, gold)], dtype=np.float64)


def retrieval_metrics(scores: np.ndarray, gold: np.ndarray | None = None) -> dict[str, float]:
    """MRR and recall@1/5/10 of ranking every candidate for every query."""
    return rank_metrics(gold_ranks(scores, gold))


def rank_metrics(ranks: np.ndarray) -> dict[str, float]:
    """MRR and recall@1/5/10 of the gold candidates' ranks (1 = first)."""
    metrics = {"mrr": float(np.mean(1.0 / ranks))}
    for k in RECALL_CUTOFFS:
        metrics[f"r@{k}"] = float(np.mean(ranks <= k))
    return metrics


def map_at_r(scores: np.ndarray, groups: Sequence[int] | np.ndarray) -> float:
    """MAP@R of every item retrieving the others of its group, as CodeXGLUE scores POJ-104: the
    mean of `average_precisions_at_r`."""
    return float(np.mean(average_precisions_at_r(scores, groups)))


def average_precisions_at_r(scores: np.ndarray, groups: Sequence[int] | np.ndarray) -> np.ndarray:
    """Each query's average precision at R, the terms whose mean is `map_at_r`.

    `scores` is an (N x N) similarity matrix; each item is a query over the N - 1 other items
    (itself left out), and the relevant ones share its group. R = the number of relevant items.
    Only the top R results count: average precision at R = (1 / R) * sum, over the relevant
    results among them, of (relevant results at or above it) / (its rank). Among equal scores the
    irrelevant items rank first, so a model that scores everything alike cannot look good; a score
    that is not finite ranks a relevant item last and an irrelevant one first. A query whose group
    has no other member is skipped (it has no R), so the result may be shorter than N.
    """
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(groups)
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] != len(groups):
        raise ValueError(f"expected an N x N score matrix and N groups, got {scores.shape} and {len(groups)}")
    precisions = []
    for query, r in enumerate(_other_members(groups)):
        if r == 0:
            continue
        others = np.arange(len(groups)) != query
        relevant = groups[others] == groups[query]
        row = scores[query, others]
        order = np.where(np.isfinite(row), -row, np.where(relevant, np.inf, -np.inf))
        ranking = np.lexsort((relevant, order))  # best first; ties: irrelevant first
        hit_ranks = np.flatnonzero(relevant[ranking[:r]]) + 1
        precisions.append(np.sum(np.arange(1, len(hit_ranks) + 1) / hit_ranks) / r)
    return np.array(precisions)


def random_ranking_map_at_r(groups: Sequence[int] | np.ndarray) -> float:
    """The expected `map_at_r` of a random ranking: what a model that learned nothing scores.

    A query with R relevant items among M = N - 1 others, ranked at random: a position holds a
    relevant item with probability R / M, and two given positions both do with
    R (R - 1) / (M (M - 1)). So position j adds R / M + (j - 1) R (R - 1) / (M (M - 1)) hits at
    or above it, and E[AP@R] = (1 / R) sum_{j<=R} of that / j = (H_R + (R - 1) (R - H_R) / (M - 1)) / M,
    H_R the R-th harmonic number. Averaged over the queries that `map_at_r` keeps.
    """
    relevant = _other_members(np.asarray(groups))
    relevant = relevant[relevant > 0]
    others = len(groups) - 1
    harmonic = np.array([math.fsum(1 / j for j in range(1, r + 1)) for r in relevant])
    # M = 1 leaves only R = 1, whose second term is 0 whatever the denominator.
    pairs = (relevant - 1) * (relevant - harmonic) / max(others - 1, 1)
    return float(np.mean((harmonic + pairs) / others))


def _other_members(groups: np.ndarray) -> np.ndarray:
    """For each item, how many other items share its group (R of MAP@R)."""
    _, group_index, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if sizes.size == 0 or sizes.max() < 2:
        raise ValueError("no group has two or more items; MAP@R is undefined")
    return sizes[group_index] - 1


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The `level` confidence interval of the mean of `values` (Student's t: a few seeds' scores);
    None for fewer than two values."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return None
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if len(predictions) == 0:
        raise ValueError("nothing to score: no predictions")


def codexglue_tokens(text: str) -> list[str]:
    """Tokens of CodeXGLUE's code-to-text BLEU: lowercased words, split at `_`, and single symbols.

    >>> codexglue_tokens("Get the User's file_path.")
    ['get', 'the', 'user', "'", 's', 'file', '_', 'path', '.']

    The evaluator lowercases, splits into words and single punctuation marks (`splitPuncts`), then
    normalises that as NIST's mteval does (`normalize`): it drops `<skipped>`, joins `-` line
    breaks, unescapes XML entities, puts spaces around most ASCII symbols, splits `.`, `,` and `-`
    from certain neighbours and splits on whitespace. By then every symbol is already a token of
    its own, so `<skipped>` and `&quot;` no longer occur as such and the line-break, digit and
    symbol rules change nothing, except for `_`: a word character to `splitPuncts`, it is one of
    the symbols `normalize` separates (`file_path` becomes `file _ path`). Words without `_` and
    single symbols are what remains, which is what this one pattern finds.
    """
    return _WORD_OR_SYMBOL.findall(text.lower())


def _clipped_ngram_matches(hypothesis: list[str], reference: list[str], n: int) -> tuple[int, int]:
    """(matched, total) n-grams of the hypothesis; each n-gram matches at most as often as it
    occurs in the reference."""
    hyp_ngrams = Counter(tuple(hypothesis[i : i + n]) for i in range(len(hypothesis) - n + 1))
    ref_ngrams = Counter(tuple(reference[i : i + n]) for i in range(len(reference) - n + 1))
    return sum((hyp_ngrams & ref_ngrams).values()), sum(hyp_ngrams.values())


def _smoothed_sentence_bleu4(hypothesis: str, reference: str) -> float:
    """CodeXGLUE's smoothed BLEU-4 of one sentence, on 0..1 (see `smoothed_bleu4`)."""
    hyp, ref = codexglue_tokens(hypothesis), codexglue_tokens(reference)
    log_precisions = 0.0
    for n in range(1, BLEU_MAX_ORDER + 1):
        matches, total = _clipped_ngram_matches(hyp, ref, n)
        smoothing = 0 if n == 1 else 1
        log_precisions += math.log(matches + smoothing + _LOG_GUARD) - math.log(total + smoothing + _LOG_GUARD)
    log_brevity_penalty = min(0.0, 1 - (len(ref) + 1) / (len(hyp) + 1))
    return math.exp(log_precisions / BLEU_MAX_ORDER + log_brevity_penalty)


def smoothed_bleu4(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Smoothed BLEU-4 of code summarization, as CodeXGLUE code-to-text computes it (0..100).

    Each hypothesis and its reference become `codexglue_tokens`. Per sentence: clipped n-gram
    precisions p1..p4, where p2, p3 and p4 add one to both the matched and the total count (p1 is
    not smoothed); their geometric mean times the brevity penalty
    exp(min(0, 1 - (ref_len + 1) / (hyp_len + 1))). The sentence scores are averaged and
    multiplied by 100.

    As in the evaluator, every count inside a logarithm gets the smallest positive float added.
    A hypothesis without a matching word therefore scores about 1e-75 rather than failing, and an
    empty hypothesis, whose unigram term is then log(tiny) - log(tiny) = 0, scores
    100 * exp(-ref_len): 100 against an empty reference, 36.8 against a one-word reference.
    """
    _check_pairs(hypotheses, references)
    sentence_scores = [_smoothed_sentence_bleu4(h, r) for h, r in zip(hypotheses, references)]
    return 100.0 * math.fsum(sentence_scores) / len(sentence_scores)


def _single_spaced(code: str) -> str:
    return " ".join(code.split())


def corpus_bleu4(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 of generated code (CONCODE), through sacrebleu, on 0..100.

    CodeXGLUE's CONCODE evaluator scores whitespace-separated tokens, case-sensitively. sacrebleu
    therefore runs with tokenize="none": its default tokeniser (13a) is made for natural language
    and would split code further (`a.b()` into `a . b ( )`), changing the n-grams and the score.
    The code is handed over already split on whitespace and rejoined with single spaces, so the
    tokens are the evaluator's by construction (sacrebleu also splits on whitespace after "none",
    so this does not change today's scores; it keeps them from depending on that detail).

    Smoothing is sacrebleu's "add-k" with k = 1: one is added to the matched and the total counts
    of 2-, 3- and 4-grams. CodeXGLUE's evaluator adds one to unigrams too, which sacrebleu does
    not offer; on a test set of thousands of examples that moves the score far below 0.01 BLEU,
    but on a handful of sentences the two differ.
    """
    _check_pairs(hypotheses, references)
    bleu = sacrebleu.corpus_bleu(
        [_single_spaced(h) for h in hypotheses],
        [[_single_spaced(r) for r in references]],
        smooth_method="add-k",
        smooth_value=1,
        tokenize="none",
        force=True,  # the input is tokenised on purpose; silences sacrebleu's warning about it
    )
    return float(bleu.score)


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Percentage of predictions equal to their reference, ignoring whitespace layout (0..100).

    Two strings match when their whitespace-separated tokens are equal, as CodeXGLUE compares
    `pred.split() == gt.split()` for line completion and CONCODE: surrounding whitespace is
    ignored and every run of internal whitespace counts as one separator; case and punctuation
    count.
    """
    _check_pairs(predictions, references)
    matches = [p.split() == r.split() for p, r in zip(predictions, references)]
    return 100.0 * sum(matches) / len(matches)


def edit_similarity(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean edit similarity of line completion, `rapidfuzz.fuzz.ratio`, on 0..100.

    fuzz.ratio is CodeXGLUE's line-completion measure: the normalised InDel similarity
    100 * (1 - indel_distance / (len_a + len_b)) = 100 * 2 * LCS / (len_a + len_b) over
    characters, i.e. Levenshtein's ratio with a substitution costing two. Surrounding whitespace
    is stripped from both sides (CodeXGLUE strips the prediction line it reads from a file; its
    references have none); internal whitespace counts. Two empty strings score 100.
    """
    _check_pairs(predictions, references)
    ratios = [fuzz.ratio(p.strip(), r.strip()) for p, r in zip(predictions, references)]
    return math.fsum(ratios) / len(ratios)


def _binary(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1 (1 = clone)")
    return array.astype(bool)


def _scores(values: Sequence[float] | np.ndarray, length: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (length,):
        raise ValueError(f"expected {length} scores (one per label), got shape {array.shape}")
    return array


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def precision_recall_f1(
    labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray
) -> dict[str, float]:
    """Precision, recall and F1 (fractions, 0..1) of the positive class 1 (clone pairs).

    A ratio whose denominator is zero (no predicted positives, no actual positives) is 0.0.
    """
    labels = _binary(labels, "labels")
    predictions = _binary(predictions, "predictions")
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.size} predictions but {labels.size} labels")
    true_positives = int(np.sum(labels & predictions))
    predicted, actual = int(predictions.sum()), int(labels.sum())
    return {
        "precision": _ratio(true_positives, predicted),
        "recall": _ratio(true_positives, actual),
        "f1": _ratio(2 * true_positives, predicted + actual),
    }


def best_threshold(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """The decision threshold that maximises F1 on (validation) scores; predict 1 when score >= it.

    Every distinct finite score is a candidate. Ties go to the highest F1, then to the larger
    threshold (the stricter classifier), so the answer does not depend on the order of the
    examples. With no positive label every F1 is 0 and the largest score is returned; with no
    finite score, 0.0 (every threshold classifies every pair wrongly).
    """
    labels = _binary(labels, "labels")
    scores = _scores(scores, labels.size)
    finite = np.isfinite(scores)
    if not finite.any():
        return 0.0
    thresholds, group = np.unique(scores[finite], return_inverse=True)  # ascending
    # Counts at or above each threshold: suffix sums over the ascending distinct scores; pairs
    # without a finite score are wrong at every threshold (a negative one predicted a clone).
    predicted = np.cumsum(np.bincount(group)[::-1])[::-1] + np.sum(~finite & ~labels)
    true_positives = np.cumsum(np.bincount(group, weights=labels[finite])[::-1])[::-1]
    f1 = 2 * true_positives / (predicted + labels.sum())  # predicted >= 1, never 0/0
    return float(thresholds[np.flatnonzero(f1 == f1.max())[-1]])


def classification_metrics(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> dict[str, float]:
    """Precision, recall and F1 (0..1) of predicting a clone when score >= threshold, and the
    threshold itself (tune it on validation data with `best_threshold`)."""
    labels = _binary(labels, "labels")
    return {**precision_recall_f1(labels, clone_decisions(labels, scores, threshold)), "threshold": float(threshold)}


def clone_decisions(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                    threshold: float) -> np.ndarray:
    """1 (a clone) where score >= threshold; a pair without a finite score is decided wrongly."""
    labels = _binary(labels, "labels")
    scores = _scores(scores, labels.size)
    return np.where(np.isfinite(scores), scores >= threshold, ~labels)
