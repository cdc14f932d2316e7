"""Clone detection (BigCloneBench, CodeXGLUE style): are two functions semantically the same?

The shared encoder embeds both functions (pooled as its family's row says); a classifier on the two vectors side by
side, as CodeXGLUE's clone detection model does, gives the probability of "clone". The decision
threshold is the one that maximises F1 on the validation split; test uses that threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from telly.data.formats import read_bigclonebench
from telly.metrics import best_threshold, clone_decisions, precision_recall_f1
from telly.tasks.base import Task, TaskModel
from telly.tasks.encoders import embed_all, encode_pooled


@dataclass(frozen=True)
class ClonePair:
    first: str
    second: str
    label: int


class PairClassifier(TaskModel):
    """Encoder + a classification head over [u; v] (dense → tanh → dropout → 2 classes).

    The head's dropout is the encoder's own hidden dropout, as in CodeXGLUE's classification head.
    """

    has_new_parts = True

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        width = encoder.config.hidden_size
        dropout = getattr(encoder.config, "hidden_dropout_prob", 0.1)  # 0.1 where a config names it otherwise (T5)
        self.head = nn.Sequential(
            nn.Linear(2 * width, width), nn.Tanh(), nn.Dropout(dropout), nn.Linear(width, 2)
        )

    def components(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "head": self.head}

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return encode_pooled(self.encoder, input_ids, attention_mask)

    def classify(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Logits of (not clone, clone) for pairs of embeddings."""
        return self.head(torch.cat([first, second], dim=-1))


class CloneDetectionTask(Task):
    name = "clone-detection"
    selection_metric = "f1"
    metrics = ("precision", "recall", "f1")
    pools = True
    evaluates_from_prefix_cache = True
    tunes_on_valid = True

    def read_split(self, data_dir: Path, split: str) -> list[ClonePair]:
        data = read_bigclonebench(data_dir, split)
        return [ClonePair(data.functions[a], data.functions[b], label) for a, b, label in data.pairs]

    def encoder_inputs(self, examples: Sequence[ClonePair]) -> tuple[list[str], int]:
        return [e.first for e in examples], self.config.max_code_len

    def build_model(self, pretrained: nn.Module) -> PairClassifier:
        return PairClassifier(pretrained)

    def collate(self, examples: Sequence[ClonePair]) -> dict[str, torch.Tensor]:
        # Both sides in one encoder pass: the first half of the rows are the first functions.
        code = self.tokenize([e.first for e in examples] + [e.second for e in examples], self.config.max_code_len)
        return {**code, "labels": torch.tensor([e.label for e in examples])}

    def loss(self, model: PairClassifier, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        vectors = model.embed(batch["input_ids"], batch["attention_mask"])
        first, second = vectors.chunk(2)
        return F.cross_entropy(model.classify(first, second), batch["labels"])

    def evaluate(self, model: PairClassifier, examples: Sequence[ClonePair], description: str, valid_metrics=None) -> dict:
        scores = self.clone_probabilities(model, examples, description)
        threshold = self.threshold(scores, examples, valid_metrics)
        return {**self.score(clone_decisions(labels_of(examples), scores, threshold), examples), "threshold": threshold}

    def predict(self, model: PairClassifier, examples: Sequence[ClonePair], description: str,
                valid_metrics=None) -> np.ndarray:
        """1 (a clone) or 0 per pair, at the threshold chosen on valid."""
        scores = self.clone_probabilities(model, examples, description)
        return clone_decisions(labels_of(examples), scores, self.threshold(scores, examples, valid_metrics))

    def score(self, predictions: Sequence[int], examples: Sequence[ClonePair]) -> dict[str, float]:
        return precision_recall_f1(labels_of(examples), predictions)

    @staticmethod
    def threshold(scores: np.ndarray, examples: Sequence[ClonePair], valid_metrics: dict | None) -> float:
        """The valid split's threshold; on the valid split itself, the one that maximises F1 there."""
        return valid_metrics["threshold"] if valid_metrics else best_threshold(labels_of(examples), scores)

    def clone_probabilities(self, model: PairClassifier, examples: Sequence[ClonePair], description: str) -> np.ndarray:
        # Each distinct function is embedded once, however many pairs it is in.
        functions = sorted({code for e in examples for code in (e.first, e.second)})
        position = {code: i for i, code in enumerate(functions)}
        vectors = embed_all(
            self.runtime, model.embed, lambda batch: self.tokenize(batch, self.config.max_code_len),
            list(self.eval_batches(functions)), description,
        )
        pairs = {"first": vectors[[position[e.first] for e in examples]],
                 "second": vectors[[position[e.second] for e in examples]]}
        [scores] = self.runtime.infer(lambda batch: model.classify(batch["first"], batch["second"]).softmax(-1)[:, 1],
                                      [pairs], f"{description} pairs")
        return scores.float().numpy()


def labels_of(examples: Sequence[ClonePair]) -> np.ndarray:
    return np.array([e.label for e in examples])
