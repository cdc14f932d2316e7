"""The protocol every task implements; the training loop talks to tasks only through it.

A task turns dataset files into examples, examples into tensor batches, batches into a loss, and
examples into metrics. It never owns an optimiser, a schedule or a checkpoint: that is the loop's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from telly.config import FinetuneConfig

# Tokenizers advertise "no limit" as a huge number; such a value is not a real position limit.
UNBOUNDED_LENGTH = 1_000_000


class Task(ABC):
    name: ClassVar[str]
    #: The validation metric that picks the best checkpoint (higher is better).
    selection_metric: ClassVar[str]

    def __init__(self, config: FinetuneConfig, tokenizer: PreTrainedTokenizerBase):
        self.config = config
        self.tokenizer = tokenizer

    @abstractmethod
    def read_split(self, data_dir: Path, split: str) -> list:
        """Examples of one split ("train", "valid" or "test"); a user mistake raises UserError."""

    @abstractmethod
    def build_model(self, pretrained: nn.Module) -> nn.Module:
        """The trainable model: the pre-trained model plus whatever head the task needs."""

    @abstractmethod
    def collate(self, examples: Sequence) -> dict[str, torch.Tensor]:
        """A training batch."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch."""

    @abstractmethod
    def evaluate(self, model: nn.Module, examples: Sequence, description: str) -> dict[str, float]:
        """Metrics of `model` on `examples` (the caller puts the model in eval mode, no grad)."""

    # Shared helpers for subclasses.

    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        """Pad to the longest text in the batch, truncate to the length limit (never beyond the model's)."""
        limit = self.tokenizer.model_max_length
        if limit < UNBOUNDED_LENGTH:
            max_length = min(max_length, limit)
        encoded = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def eval_batches(self, items: Sequence) -> Iterator[Sequence]:
        size = self.config.eval_batch_size
        for start in range(0, len(items), size):
            yield items[start : start + size]
