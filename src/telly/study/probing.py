"""Layer-wise probes: small heads trained on frozen representations, one layer at a time or mixed.

A probe reads features of shape (N, L+1, D) — N items, every layer (0 = embedding output) — and
picks what it sees with a `LayerPick` (one layer) or a `ScalarMix` (a softmax-normalised weight per
layer, learned jointly with the head). Features are standardised per layer and dimension with the
training items' statistics, so every layer starts on the same scale. The head and loss come from
an `Objective`:
- `Classification` (lexical token types, complexity classes): a linear layer, cross-entropy,
  accuracy;
- `Matching` (syntactic): a linear map into a fixed target space (the SBT vectors), in-batch
  contrastive loss, MRR of finding each item's own target among all test targets;
- `GroupRetrieval` (semantic): a linear map into a space where programs of one group meet,
  supervised contrastive loss, MAP@R of retrieving the other members of a group (as CodeXGLUE
  scores POJ-104).
Training is deterministic for a seed: same features, same seed, same scores.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from telly.metrics import map_at_r, random_ranking_map_at_r, retrieval_metrics
from telly.runtime import CPU, Runtime

SIMILARITY_SCALE = 20.0  # cosine similarities × scale are the contrastive logits (as code search)
PROJECTION_SIZE = 128


class Objective:
    metric: str
    batch_size = 64

    def head(self, width: int) -> nn.Module:
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
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

    def score(self, outputs, targets):
        return float((outputs.argmax(dim=-1) == targets).float().mean())

    def baseline(self, train_targets, test_targets):
        majority = torch.bincount(train_targets, minlength=self.num_classes).argmax()
        return float((test_targets == majority).float().mean())


@dataclass
class Matching(Objective):
    """Targets are fixed unit vectors (N, target_size); item i must find target i among all targets."""

    target_size: int
    batch_size: int = 64
    metric = "mrr"

    def head(self, width: int) -> nn.Module:
        return nn.Linear(width, self.target_size)

    def loss(self, outputs, targets):
        logits = SIMILARITY_SCALE * F.normalize(outputs, dim=-1) @ targets.T
        return F.cross_entropy(logits, torch.arange(len(outputs), device=logits.device))

    def score(self, outputs, targets):
        return retrieval_metrics((F.normalize(outputs, dim=-1) @ targets.T).numpy())["mrr"]

    def baseline(self, train_targets, test_targets):
        n = len(test_targets)  # a random ranking: the gold item's expected reciprocal rank
        return float(np.mean(1.0 / np.arange(1, n + 1)))


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

    def score(self, outputs, targets):
        vectors = F.normalize(outputs, dim=-1)
        return map_at_r((vectors @ vectors.T).numpy(), targets.numpy())

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
    """Σ_l softmax(w)_l · features[:, l] with one learned weight per layer (Peters et al., 2018)."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))

    def weights(self) -> torch.Tensor:
        return self.logits.softmax(dim=0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("l,nld->nd", self.weights(), features)


@dataclass
class ProbeResult:
    metric: str
    layers: list[float]  # score of the probe on each layer alone, 0..L
    weighted: float  # score of the weighted-layer probe
    weights: list[float]  # its learned layer weights (sum to 1)
    baseline: float  # a probe that learned nothing
    train_items: int
    test_items: int

    @property
    def best_layer(self) -> int:
        return int(np.argmax(self.layers))


@dataclass
class ProbeData:
    train_features: torch.Tensor  # (N, L+1, D), any float dtype
    train_targets: torch.Tensor
    test_features: torch.Tensor
    test_targets: torch.Tensor


def probe_all_layers(
    data: ProbeData, objective: Objective, seed: int = 0, epochs: int = 20, lr: float = 1e-3, min_steps: int = 300,
    runtime: Runtime = CPU, description: str = "probes",
) -> ProbeResult:
    """A probe per layer and the weighted-layer probe, each trained on train and scored on test, on
    the runtime's device (the probes are initialised on the CPU, so a seed gives the same start anywhere).

    Each probe trains for `epochs`, or for as many more as `min_steps` optimiser steps need (few
    items). A progress bar named `description` counts the probes trained.
    """
    mean, std = runtime.move(_layer_statistics(data.train_features))
    placed = ProbeData(*runtime.move([data.train_features, data.train_targets, data.test_features, data.test_targets]))
    num_layers = data.train_features.size(1)
    with tqdm(total=num_layers + 1, desc=description, unit="probe", leave=False, disable=None) as progress:
        layer_scores = []
        for layer in range(num_layers):
            probe = _fit(placed, objective, LayerPick(layer), mean, std, seed, epochs, lr, min_steps, runtime)
            layer_scores.append(_score(probe, placed, data.test_targets, objective, mean, std))
            progress.update()
        mix = ScalarMix(num_layers)
        probe = _fit(placed, objective, mix, mean, std, seed, epochs, lr, min_steps, runtime)
        progress.update()
    return ProbeResult(
        metric=objective.metric,
        layers=layer_scores,
        weighted=_score(probe, placed, data.test_targets, objective, mean, std),
        weights=[float(w) for w in mix.weights().detach().cpu()],
        baseline=objective.baseline(data.train_targets, data.test_targets),
        train_items=len(data.train_targets),
        test_items=len(data.test_targets),
    )


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
def _score(probe: nn.Module, data: ProbeData, targets: torch.Tensor, objective: Objective, mean, std) -> float:
    """The probe's score on the test items (`targets`: their CPU copy; metrics are computed there)."""
    outputs = torch.cat([probe((chunk.float() - mean) / std) for chunk in data.test_features.split(4096)])
    return objective.score(outputs.cpu(), targets)
