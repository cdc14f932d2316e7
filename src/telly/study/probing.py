"""Layer-wise probes: small heads trained on frozen representations, one layer at a time or mixed.

A probe reads features of shape (N, L+1, ..., D) — N items, every layer (0 = embedding output),
one or more vectors per item and layer — and picks what it sees with a `LayerPick` (one layer) or
a `ScalarMix` (a softmax-normalised weight per layer, learned jointly with the head). Features are
standardised per layer and dimension with the training items' statistics, so every layer starts
on the same scale. The head and loss come from an `Objective`:
- `Classification` (lexical token types, complexity classes): a linear layer, cross-entropy,
  accuracy;
- `PairMatching` (syntactic, as Shi et al.): each item is two inputs the same model read (code and
  its SBT as text); one linear map per side into a shared space, in-batch contrastive loss, MRR
  of finding each code's own partner among all test partners;
- `Matching` (syntactic-ngrams): a linear map into a fixed target space (TF-IDF vectors of SBT
  n-grams), in-batch contrastive loss, MRR of finding each item's own target among all test targets;
- `GroupRetrieval` (semantic, invariance): a linear map into a space where programs of one group
  meet, supervised contrastive loss, MAP@R of retrieving the other members of a group (as
  CodeXGLUE scores POJ-104).
Every objective scores each test item (`item_scores`; the metric is their mean), so each score
comes with a bootstrap interval over the test items. The weighted-layer probe trains with several
seeds, and its layer weights are reported per seed. Training is deterministic for a seed: same
features, same seed, same scores.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from telly.metrics import average_precisions_at_r, gold_ranks, random_ranking_map_at_r
from telly.runtime import CPU, Runtime
from telly.study.uncertainty import DEFAULT_RESAMPLES, Interval, bootstrap_interval

SIMILARITY_SCALE = 20.0  # cosine similarities × scale are the contrastive logits (as code search)
PROJECTION_SIZE = 128
WEIGHT_SEEDS = 3  # the weighted-layer probe trains with seeds seed, seed + 1, ...


class Objective:
    metric: str
    batch_size = 64

    def head(self, width: int) -> nn.Module:
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def item_scores(self, outputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        """One score per test item (or query); the metric is their mean."""
        raise NotImplementedError

    def batches(self, targets: torch.Tensor, rng: random.Random) -> list[list[int]]:
        """One epoch of training batches (indices), in random order."""
        order = rng.sample(range(len(targets)), len(targets))
        return [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]

    def baseline(self, train_targets: torch.Tensor, test_targets: torch.Tensor) -> float:
        """The score of a probe that learned nothing (majority class, or chance)."""
        raise NotImplementedError


@dataclass
class Classification(Objective):
    num_classes: int
    batch_size: int = 64
    metric = "accuracy"

    def head(self, width: int) -> nn.Module:
        return nn.Linear(width, self.num_classes)

    def loss(self, outputs, targets):
        return F.cross_entropy(outputs, targets)

    def item_scores(self, outputs, targets):
        return (outputs.argmax(dim=-1) == targets).double().numpy()

    def baseline(self, train_targets, test_targets):
        majority = torch.bincount(train_targets, minlength=self.num_classes).argmax()
        return float((test_targets == majority).float().mean())


def _in_batch_contrastive_loss(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each query finding its own key (same row) among the batch's keys (unit vectors)."""
    logits = SIMILARITY_SCALE * queries @ keys.T
    return F.cross_entropy(logits, torch.arange(len(queries), device=logits.device))


def _reciprocal_ranks(queries: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
    return 1.0 / gold_ranks((queries @ keys.T).numpy())


def _random_ranking_mrr(candidates: int) -> float:
    """The expected reciprocal rank of the one right candidate in a random ranking."""
    return float(np.mean(1.0 / np.arange(1, candidates + 1)))


@dataclass
class Matching(Objective):
    """Targets are fixed unit vectors (N, target_size); item i must find target i among all targets."""

    target_size: int
    batch_size: int = 64
    metric = "mrr"

    def head(self, width: int) -> nn.Module:
        return nn.Linear(width, self.target_size)

    def loss(self, outputs, targets):
        return _in_batch_contrastive_loss(F.normalize(outputs, dim=-1), targets)

    def item_scores(self, outputs, targets):
        return _reciprocal_ranks(F.normalize(outputs, dim=-1), targets)

    def baseline(self, train_targets, test_targets):
        return _random_ranking_mrr(len(test_targets))


class TwoTowers(nn.Module):
    """One linear map for each side of a pair of inputs: (N, 2, D) -> (N, 2, size)."""

    def __init__(self, width: int, size: int):
        super().__init__()
        self.sides = nn.ModuleList([nn.Linear(width, size), nn.Linear(width, size)])

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return torch.stack([side(pairs[:, index]) for index, side in enumerate(self.sides)], dim=1)


@dataclass
class PairMatching(Objective):
    """Features (N, L+1, 2, D): per item, the model's vectors of two inputs that belong together (code,
    its SBT). Item i's first input must find its own second input among all items' second inputs.
    Targets are the item indices (only their number matters)."""

    batch_size: int = 64
    metric = "mrr"

    def head(self, width: int) -> nn.Module:
        return TwoTowers(width, PROJECTION_SIZE)

    def loss(self, outputs, targets):
        return _in_batch_contrastive_loss(*F.normalize(outputs, dim=-1).unbind(dim=1))

    def item_scores(self, outputs, targets):
        return _reciprocal_ranks(*F.normalize(outputs, dim=-1).unbind(dim=1))

    def baseline(self, train_targets, test_targets):
        return _random_ranking_mrr(len(test_targets))


@dataclass
class GroupRetrieval(Objective):
    """Targets are group ids (N,); members of a group must be each other's nearest items."""

    groups_per_batch: int = 32
    metric = "map@r"

    def head(self, width: int) -> nn.Module:
        return nn.Linear(width, PROJECTION_SIZE)

    def loss(self, outputs, targets):
        """Supervised contrastive loss (Khosla et al., 2020): each item against the batch, positives = its group."""
        vectors = F.normalize(outputs, dim=-1)
        logits = SIMILARITY_SCALE * vectors @ vectors.T
        itself = torch.eye(len(targets), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(itself, -torch.inf)
        positives = (targets[:, None] == targets[None, :]) & ~itself
        log_probabilities = logits.log_softmax(dim=-1).masked_fill(~positives, 0.0)
        return -(log_probabilities.sum(dim=-1) / positives.sum(dim=-1).clamp(min=1)).mean()

    def item_scores(self, outputs, targets):
        vectors = F.normalize(outputs, dim=-1)
        return average_precisions_at_r((vectors @ vectors.T).numpy(), targets.numpy())

    def batches(self, targets, rng):
        """Whole groups per batch, so every item has its positives beside it."""
        members = defaultdict(list)
        for index, group in enumerate(targets.tolist()):
            members[group].append(index)
        groups = rng.sample(sorted(members), len(members))
        return [
            [index for group in groups[start : start + self.groups_per_batch] for index in members[group]]
            for start in range(0, len(groups), self.groups_per_batch)
        ]

    def baseline(self, train_targets, test_targets):
        return random_ranking_map_at_r(test_targets.numpy())


class LayerPick(nn.Module):
    def __init__(self, layer: int):
        super().__init__()
        self.layer = layer

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, self.layer]


class ScalarMix(nn.Module):
    """Σ_l softmax(w)_l · features[:, l] with one learned weight per layer (Peters et al., 2018).

    Features may hold several vectors per item and layer, (N, L+1, ..., D): one mix for all of them.
    """

    def __init__(self, num_layers: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))

    def weights(self) -> torch.Tensor:
        return self.logits.softmax(dim=0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("l,nl...->n...", self.weights(), features)


@dataclass
class ProbeResult:
    metric: str
    layers: list[float]  # score of the probe on each layer alone, 0..L
    layer_intervals: list[Interval]  # their 95% bootstrap intervals over the test items
    weighted: float  # score of the weighted-layer probe (first seed)
    weighted_interval: Interval
    weights: list[float]  # its learned layer weights (sum to 1), mean over the seeds
    weights_by_seed: list[list[float]]  # per seed (seed, seed + 1, ...)
    weighted_by_seed: list[float]  # the weighted-layer probe's score per seed
    baseline: float  # a probe that learned nothing
    train_items: int
    test_items: int

    @property
    def best_layer(self) -> int:
        return int(np.argmax(self.layers))


@dataclass
class ProbeData:
    train_features: torch.Tensor  # (N, L+1, ..., D), any float dtype
    train_targets: torch.Tensor
    test_features: torch.Tensor
    test_targets: torch.Tensor
    # Items of one cluster (the tokens of one function) are resampled together by the bootstrap.
    test_clusters: torch.Tensor | None = None


def probe_all_layers(
    data: ProbeData, objective: Objective, seed: int = 0, epochs: int = 20, lr: float = 1e-3, min_steps: int = 300,
    runtime: Runtime = CPU, weight_seeds: int = WEIGHT_SEEDS, resamples: int = DEFAULT_RESAMPLES,
    description: str = "probes",
) -> ProbeResult:
    """A probe per layer and the weighted-layer probe, each trained on train and scored on test, on
    the runtime's device (the probes are initialised on the CPU, so a seed gives the same start anywhere).

    Each probe trains for `epochs`, or for as many more as `min_steps` optimiser steps need (few items).
    Every score gets a 95% bootstrap interval (`resamples` resamples of the test items, the same
    resamples for every probe); the weighted-layer probe trains once per seed of `weight_seeds`.
    A progress bar named `description` counts the probes trained.
    """
    mean, std = runtime.move(_layer_statistics(data.train_features))
    placed = ProbeData(*runtime.move([data.train_features, data.train_targets, data.test_features, data.test_targets]))
    clusters = None if data.test_clusters is None else data.test_clusters.numpy()

    def fitted(select: nn.Module, fit_seed: int) -> tuple[float, Interval]:
        with _one_cpu_thread():
            probe = _fit(placed, objective, select, mean, std, fit_seed, epochs, lr, min_steps, runtime)
            item_scores = _item_scores(probe, placed, data.test_targets, objective, mean, std)
        return float(np.mean(item_scores)), bootstrap_interval(item_scores, resamples, seed, clusters)

    num_layers = data.train_features.size(1)
    with tqdm(total=num_layers + weight_seeds, desc=description, unit="probe", leave=False, disable=None) as progress:
        def counted(select: nn.Module, fit_seed: int) -> tuple[float, Interval]:
            result = fitted(select, fit_seed)
            progress.update()
            return result

        layer_scores, layer_intervals = zip(*(counted(LayerPick(layer), seed) for layer in range(num_layers)))
        mixes = [ScalarMix(num_layers) for _ in range(weight_seeds)]
        weighted = [counted(mix, seed + offset) for offset, mix in enumerate(mixes)]
    weights_by_seed = [[float(w) for w in mix.weights().detach().cpu()] for mix in mixes]
    return ProbeResult(
        metric=objective.metric,
        layers=list(layer_scores),
        layer_intervals=list(layer_intervals),
        weighted=weighted[0][0],
        weighted_interval=weighted[0][1],
        weights=[float(w) for w in np.mean(weights_by_seed, axis=0)],
        weights_by_seed=weights_by_seed,
        weighted_by_seed=[score for score, _ in weighted],
        baseline=objective.baseline(data.train_targets, data.test_targets),
        train_items=len(data.train_targets),
        test_items=len(data.test_targets),
    )


@contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """Run with one CPU thread: a probe's steps are tiny (a batch through one linear map), and more
    threads only add synchronisation. On a busy 2-core machine, 25 steps of the structural probe
    took 4.1 s with torch's 2 threads and 0.13 s with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _layer_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer, per-dimension mean and std of the training features, in chunks (they may be fp16)."""
    total = torch.zeros(features.shape[1:], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in features.split(4096):
        chunk = chunk.double()
        total += chunk.sum(dim=0)
        squares += (chunk**2).sum(dim=0)
    mean = total / len(features)
    std = (squares / len(features) - mean**2).clamp(min=0).sqrt()
    return mean.float(), std.float().clamp(min=1e-6)


def _fit(data, objective, select, mean, std, seed, epochs, lr, min_steps, runtime) -> nn.Sequential:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    head = objective.head(data.train_features.size(-1))
    probe = runtime.place(nn.Sequential(select, head))
    mix_parameters = list(select.parameters())
    optimizer = torch.optim.Adam(
        # The layer weights get a larger step: there are few of them and they start uniform.
        [{"params": head.parameters()}, {"params": mix_parameters, "lr": 10 * lr}] if mix_parameters
        else head.parameters(),
        lr=lr,
    )
    steps = 0
    for epoch in itertools.count():
        if epoch >= epochs and steps >= min_steps:
            break
        for batch in objective.batches(data.train_targets, rng):
            steps += 1
            features = (data.train_features[batch].float() - mean) / std
            loss = objective.loss(probe(features), data.train_targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return probe


@torch.no_grad()
def _item_scores(probe: nn.Module, data: ProbeData, targets: torch.Tensor, objective: Objective, mean, std) -> np.ndarray:
    """The probe's score of each test item (`targets`: their CPU copy; metrics are computed there)."""
    outputs = torch.cat([probe((chunk.float() - mean) / std) for chunk in data.test_features.split(4096)])
    return objective.item_scores(outputs.cpu(), targets)
