"""The protocol every task implements; the training loop talks to tasks only through it.

A task loads the pre-trained model it needs, turns dataset files into examples, examples into
tensor batches, batches into a loss, and examples into metrics. It never owns an optimiser, a
schedule or a checkpoint: that is the loop's. Nor does it place anything on a device: it builds
CPU tensors, the loop moves training batches, and evaluation runs its batches through
`self.runtime.infer`, which moves them; tensors a task makes from model outputs take their device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import torch
from torch import nn
from transformers import PretrainedConfig

from telly.config import FinetuneConfig
from telly.errors import UserError
from telly.models.layers import find_backbone, max_positions
from telly.models.load import encoder_class, load_pretrained
from telly.runtime import CPU, Runtime

#: Label of a position that is not scored (PyTorch's cross-entropy default).
IGNORE_INDEX = -100


def pad_with_ignore(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Token-id rows right-padded to the longest with IGNORE_INDEX, as one tensor."""
    width = max(len(row) for row in rows)
    return torch.tensor([list(row) + [IGNORE_INDEX] * (width - len(row)) for row in rows])


class TaskModel(nn.Module):
    """What a task trains: the pre-trained model plus the task's head or decoder."""

    #: True when part of the model is newly initialised, so a zero-shot score would be meaningless.
    has_new_parts: ClassVar[bool] = False

    def components(self) -> dict[str, nn.Module]:
        """Named parts for the parameter report (encoder, decoder, head)."""
        return {}


class Task(ABC):
    name: ClassVar[str]
    #: The validation metric that picks the best checkpoint: the class names the task's own, and
    #: an instance takes --select-by's instead when given.
    selection_metric: str
    #: The quality metrics `evaluate` returns, each higher-is-better (what --select-by may name).
    metrics: ClassVar[tuple[str, ...]]
    #: Config values set before the pre-trained weights load (e.g. {"is_decoder": True}).
    pretrained_overrides: ClassVar[dict] = {}
    #: Whether `evaluate` needs `valid_metrics` for a fair test score (then valid is scored first).
    tunes_on_valid: ClassVar[bool] = False
    #: Whether the task pools a model's token states into one vector per input (code search, clones).
    pools: ClassVar[bool] = False
    #: Whether evaluation may start from the activation cache (`FrozenPrefixCache.evaluating`): every
    #: call of the pre-trained encoder while evaluating reads whole inputs and keeps nothing for later.
    evaluates_from_prefix_cache: ClassVar[bool] = False

    def __init__(self, config: FinetuneConfig, runtime: Runtime = CPU):
        self.config = config
        self.runtime = runtime
        self.selection_metric = config.select_by or self.selection_metric
        if self.selection_metric not in self.metrics:
            raise UserError(f"--select-by: {self.name} is scored by {', '.join(self.metrics)}; "
                            f"got {self.selection_metric!r}")
        self.tokenizer = None  # set by load_pretrained
        self.position_limit: int | None = None  # set by load_pretrained

    def pretrained_class(self, model_config: PretrainedConfig) -> type:
        """The Auto class to load; encoder tasks take T5's encoder alone."""
        return encoder_class(model_config)

    def load_pretrained(self) -> nn.Module:
        """Load the pre-trained model (returned) and the tokenizer the task will use."""
        model, self.tokenizer = load_pretrained(
            self.config.model,
            trust_remote_code=self.config.trust_remote_code,
            model_class=self.pretrained_class,
            **self.pretrained_overrides,
        )
        self.position_limit = max_positions(model)
        return model

    @abstractmethod
    def read_split(self, data_dir: Path, split: str) -> list:
        """Examples of one split ("train", "valid" or "test"); a user mistake raises UserError."""

    @abstractmethod
    def build_model(self, pretrained: nn.Module) -> TaskModel:
        """The trainable model: the pre-trained model plus whatever head the task needs."""

    @abstractmethod
    def collate(self, examples: Sequence) -> dict[str, torch.Tensor]:
        """A training batch (CPU tensors; the loop moves them)."""

    @abstractmethod
    def loss(self, model: TaskModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch."""

    @abstractmethod
    def predict(self, model: TaskModel, examples: Sequence, description: str, valid_metrics: dict | None = None) -> Sequence:
        """What `model` predicts for `examples`, one item per example, as the task's official evaluator
        reads it: a ranking of candidates, a clone decision, a text (the caller puts the model in eval
        mode, no grad). The model runs on batches through `self.runtime.infer`.

        `valid_metrics` are the metrics of the same model on the validation split, for tasks that
        choose something there (clone detection's threshold); None when predicting valid itself.
        """

    @abstractmethod
    def score(self, predictions: Sequence, examples: Sequence) -> dict[str, float]:
        """The task's metrics of `predictions` (as `predict` makes them) for `examples`."""

    def evaluate(self, model: TaskModel, examples: Sequence, description: str,
                 valid_metrics: dict | None = None) -> dict[str, float]:
        """Metrics of `model` on `examples`: its predictions, scored."""
        return self.score(self.predict(model, examples, description, valid_metrics), examples)

    @abstractmethod
    def encoder_inputs(self, examples: Sequence) -> tuple[list[str], int]:
        """The text the pre-trained model reads for each example, and its token limit.

        The study compares a model's representations of these texts before and after fine-tuning.
        """

    def pooling(self, model: nn.Module) -> str | None:
        """How the task makes one vector per input of `model` ("mean" or "last"), None if it makes none."""
        return find_backbone(model).layout.pooling if self.pools else None

    # Shared helpers for subclasses.

    def max_length(self, wanted: int) -> int:
        """`wanted`, but never beyond what the model's positions or its tokenizer allow."""
        # A tokenizer without a limit reports a huge model_max_length; min() copes with that.
        return min(wanted, self.tokenizer.model_max_length, self.position_limit or wanted)

    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        """Pad to the longest text in the batch, truncate to the length limit."""
        encoded = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length(max_length), return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def round_trip(self, text: str) -> str:
        """`text` as the tokenizer can write it back (an uncased WordPiece lowercases, drops newlines).

        References pass through the same round trip as predictions, so a model is not scored on
        what its tokenizer cannot represent.
        """
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def eval_batches(self, items: Sequence) -> Iterator[Sequence]:
        size = self.config.eval_batch_size
        for start in range(0, len(items), size):
            yield items[start : start + size]
