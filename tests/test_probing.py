"""Probes on synthetic features (only one layer knows the answer), choose_k, and the probe data."""

import re
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from telly.data.python_properties import cyclomatic_complexity, lexical_types, sbt
from telly.study.probe_data import REWRITES, build_probe_set
from telly.study.probing import (
    WEIGHT_SEEDS,
    Classification,
    GroupRetrieval,
    Matching,
    PairMatching,
    ProbeData,
    probe_all_layers,
)
from telly.study.properties import complexity_class
from telly.study.recommend import choose_k
from telly.study.uncertainty import bootstrap_interval

from conftest import on_a_terminal

LAYERS, WIDTH = 5, 16


def layered_features(signal: torch.Tensor, informative_layer: int, seed: int) -> torch.Tensor:
    """(N, LAYERS, WIDTH) noise, with `signal` (N, WIDTH) added at one layer only."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(signal), LAYERS, WIDTH, generator=generator)
    features[:, informative_layer] += signal
    return features


def split(features, targets, train):
    return ProbeData(features[:train], targets[:train], features[train:], targets[train:])


@pytest.mark.parametrize("informative_layer", [1, 3])
def test_classification_probe_finds_the_one_informative_layer(informative_layer):
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (600,), generator=generator)
    centres = 3 * torch.randn(4, WIDTH, generator=generator)
    features = layered_features(centres[labels], informative_layer, seed=1)
    result = probe_all_layers(split(features, labels, 400), Classification(4), epochs=40)
    assert result.best_layer == informative_layer
    assert result.layers[informative_layer] > 0.9
    assert max(s for layer, s in enumerate(result.layers) if layer != informative_layer) < 0.5
    assert int(np.argmax(result.weights)) == informative_layer
    assert sum(result.weights) == pytest.approx(1.0)
    assert result.weighted > 0.9
    # Every score lies in its bootstrap interval; each seed of the weighted probe finds the layer.
    for score, (low, high) in zip([*result.layers, result.weighted], [*result.layer_intervals, result.weighted_interval]):
        assert low <= score <= high
    assert len(result.weights_by_seed) == len(result.weighted_by_seed) == WEIGHT_SEEDS
    assert all(int(np.argmax(weights)) == informative_layer for weights in result.weights_by_seed)
    assert result.weights == pytest.approx(np.mean(result.weights_by_seed, axis=0).tolist())
    assert result.weighted == result.weighted_by_seed[0]


def test_matching_probe_finds_the_one_informative_layer():
    generator = torch.Generator().manual_seed(0)
    targets = F.normalize(torch.randn(300, 8, generator=generator), dim=-1)
    mixing = torch.randn(8, WIDTH, generator=generator)
    features = layered_features(5 * targets @ mixing, 2, seed=2)
    result = probe_all_layers(split(features, targets, 200), Matching(8), epochs=60)
    assert result.best_layer == 2 and int(np.argmax(result.weights)) == 2
    assert result.layers[2] > 0.5 > max(result.layers[:2] + result.layers[3:])
    assert result.baseline == pytest.approx(np.mean(1 / np.arange(1, 101)))


def test_pair_matching_probe_finds_the_layer_where_both_sides_share_the_signal():
    # Item i is two inputs (code, its SBT) whose layer-2 vectors are two different linear images
    # of one shared vector; elsewhere both are noise. One mix of layers serves both sides.
    generator = torch.Generator().manual_seed(0)
    shared = torch.randn(300, 8, generator=generator)
    sides = [layered_features(5 * shared @ torch.randn(8, WIDTH, generator=generator), 2, seed=side) for side in (5, 6)]
    features = torch.stack(sides, dim=2)  # (N, LAYERS, 2, WIDTH)
    result = probe_all_layers(split(features, torch.arange(300), 200), PairMatching(), epochs=60, weight_seeds=1)
    assert result.best_layer == 2 and int(np.argmax(result.weights)) == 2
    assert result.layers[2] > 0.5 > max(result.layers[:2] + result.layers[3:])
    assert result.baseline == pytest.approx(np.mean(1 / np.arange(1, 101)))


def test_the_interval_of_tokens_resamples_whole_functions():
    # Training tokens: layer 0's first dimension is +3 for class 1 and -3 for class 0 (plus noise).
    generator = torch.Generator().manual_seed(0)
    train_labels = torch.randint(0, 2, (300,), generator=generator)
    train_features = torch.randn(300, 2, WIDTH, generator=generator)
    train_features[:, 0, 0] += 3 * (2 * train_labels - 1)
    # Test: 6 functions of 10 identical tokens; the features say class 1 for functions 0-2, but
    # functions 2 and 5 carry the other label, so the probe gets exactly 4 of the 6 functions right.
    functions = torch.arange(60) // 10
    test_features = torch.zeros(60, 2, WIDTH)
    test_features[:, 0, 0] = torch.where(functions < 3, 3.0, -3.0)
    test_labels = torch.tensor([1, 1, 0, 0, 0, 1]).repeat_interleave(10)
    data = ProbeData(train_features, train_labels, test_features, test_labels, test_clusters=functions)
    result = probe_all_layers(data, Classification(2), epochs=5, min_steps=50, weight_seeds=1, resamples=2000)
    correct = (torch.tensor([1, 1, 0, 1, 1, 0]).repeat_interleave(10)).numpy()
    assert result.layers[0] == pytest.approx(4 / 6)
    assert result.layer_intervals[0] == bootstrap_interval(correct, 2000, seed=0, clusters=functions.numpy())
    token_by_token = bootstrap_interval(correct, 2000, seed=0)
    assert token_by_token[1] - token_by_token[0] < result.layer_intervals[0][1] - result.layer_intervals[0][0]


def test_group_retrieval_probe_finds_the_one_informative_layer():
    generator = torch.Generator().manual_seed(0)
    groups = torch.arange(150).repeat_interleave(3)  # 150 groups of 3, as a function and 2 rewrites
    centres = 3 * torch.randn(150, WIDTH, generator=generator)
    features = layered_features(centres[groups], 4, seed=3)
    result = probe_all_layers(split(features, groups, 300), GroupRetrieval(), epochs=20)
    assert result.best_layer == 4 and int(np.argmax(result.weights)) == 4
    assert result.layers[4] > 0.8 > max(result.layers[:4])
    # MAP@R of a random ranking, R = 2 among M = 149 others: (1 + 1/2 + 1/148 * 1/2) / 149
    assert result.baseline == pytest.approx((1.5 + 0.5 / 148) / 149)


def test_the_same_seed_gives_the_same_scores():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (200,), generator=generator)
    features = layered_features(torch.randn(3, WIDTH, generator=generator)[labels], 0, seed=4)
    first = probe_all_layers(split(features, labels, 150), Classification(3), seed=7, epochs=3)
    again = probe_all_layers(split(features, labels, 150), Classification(3), seed=7, epochs=3)
    assert first == again


def test_classification_baseline_is_the_majority_class_share():
    objective = Classification(3)
    assert objective.baseline(torch.tensor([2, 2, 1]), torch.tensor([2, 0, 0, 2])) == 0.5


@pytest.mark.parametrize(
    "similarities, threshold, k",
    [
        ([0.99, 0.98, 0.95, 0.7, 0.3], 0.9, 2),  # layers 0..2 stay: freeze embeddings + 2 blocks
        ([0.99, 0.5, 0.95, 0.97, 0.3], 0.9, 0),  # only the embedding output stays
        ([0.8, 0.99, 0.99, 0.99, 0.3], 0.9, -1),  # even the embeddings moved: full fine-tuning
        ([1.0, 1.0, 1.0, 1.0, 1.0], 0.9, 3),  # nothing moved: all but the top block (K = L - 1)
    ],
)
def test_choose_k_freezes_the_layers_that_stayed_similar(similarities, threshold, k):
    assert choose_k(similarities, threshold) == k


@pytest.fixture(scope="module")
def probe_set():
    return build_probe_set([Path(sysconfig.get_paths()["stdlib"]) / "email"], functions=60, seed=0)


def test_probe_set_labels_are_each_functions_own(probe_set):
    assert len(probe_set.train) == 48 and len(probe_set.test) == 12
    for function in probe_set.train + probe_set.test:
        assert function.typed_tokens == tuple(lexical_types(function.code))
        assert function.sbt == tuple(sbt(function.code))
        assert function.complexity_class == complexity_class(cyclomatic_complexity(function.code))
        assert len(set(function.rewrites)) == REWRITES and function.code not in function.rewrites
        # A rewrite is the same function: the same complexity, and it parses to one function.
        for rewrite in function.rewrites:
            assert cyclomatic_complexity(rewrite) == cyclomatic_complexity(function.code)


def test_probe_set_is_deterministic_and_keeps_train_and_test_apart(probe_set):
    again = build_probe_set([Path(sysconfig.get_paths()["stdlib"]) / "email"], functions=60, seed=0)
    assert again.train == probe_set.train and again.test == probe_set.test
    assert not {f.code for f in probe_set.train} & {f.code for f in probe_set.test}


def test_probing_shows_its_progress(monkeypatch):
    terminal = on_a_terminal(monkeypatch)
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (40,), generator=generator)
    probe_all_layers(split(layered_features(torch.randn(40, WIDTH, generator=generator), 1, seed=1), labels, 30),
                     Classification(2), epochs=1, min_steps=1, description="lexical probes")
    # Drawn when it starts (later draws depend on the machine's speed): a probe per layer and the weighted
    # one per weight seed.
    assert re.search(rf"lexical probes: +0%.* 0/{LAYERS + WEIGHT_SEEDS} \[.*probe/s\]", terminal.getvalue())
