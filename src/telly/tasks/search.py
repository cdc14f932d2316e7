"""Code search (CodeXGLUE / UniXcoder style): one shared encoder embeds queries and code.

Pooled as the model's family says (the mean over real tokens for an encoder, the last real token for
a decoder; metrics.json records which), L2-normalised; training uses in-batch negatives with
cosine similarities scaled by 20; evaluation ranks every query against every test candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from telly.data.formats import read_codesearchnet_split
from telly.metrics import RECALL_CUTOFFS, rank_metrics, ranked_candidates, ranks_in
from telly.tasks.base import Task, TaskModel
from telly.tasks.encoders import embed_all, encode_pooled

SIMILARITY_SCALE = 20.0


@dataclass(frozen=True)
class SearchExample:
    query: str
    code: str


class SentenceEncoder(TaskModel):
    """One L2-normalised, pooled vector per input; the same encoder for queries and code."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def components(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(encode_pooled(self.encoder, input_ids, attention_mask), dim=-1)


class CodeSearchTask(Task):
    name = "code-search"
    selection_metric = "mrr"
    metrics = ("mrr", *(f"r@{k}" for k in RECALL_CUTOFFS))
    pools = True
    evaluates_from_prefix_cache = True

    def read_split(self, data_dir: Path, split: str) -> list[SearchExample]:
        records = read_codesearchnet_split(data_dir, split, required=("code_tokens", "docstring_tokens"))
        return [
            SearchExample(query=" ".join(r["docstring_tokens"]), code=" ".join(r["code_tokens"]))
            for r in records
        ]

    def encoder_inputs(self, examples: Sequence[SearchExample]) -> tuple[list[str], int]:
        return [e.code for e in examples], self.config.max_code_len

    def build_model(self, pretrained: nn.Module) -> SentenceEncoder:
        return SentenceEncoder(pretrained)

    def collate(self, examples: Sequence[SearchExample]) -> dict[str, torch.Tensor]:
        queries = self.tokenize([e.query for e in examples], self.config.max_nl_len)
        code = self.tokenize([e.code for e in examples], self.config.max_code_len)
        return {
            "query_ids": queries["input_ids"],
            "query_mask": queries["attention_mask"],
            "code_ids": code["input_ids"],
            "code_mask": code["attention_mask"],
        }

    def loss(self, model: SentenceEncoder, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        queries = model(batch["query_ids"], batch["query_mask"])
        code = model(batch["code_ids"], batch["code_mask"])
        logits = SIMILARITY_SCALE * queries @ code.T
        return F.cross_entropy(logits, torch.arange(len(queries), device=logits.device))

    def predict(self, model, examples: Sequence[SearchExample], description: str, valid_metrics=None) -> np.ndarray:
        """For each query, every test candidate (its index), best first."""
        queries = self.embed(model, [e.query for e in examples], self.config.max_nl_len, f"{description} queries")
        code = self.embed(model, [e.code for e in examples], self.config.max_code_len, f"{description} code")
        return ranked_candidates((queries @ code.T).float().numpy())

    def score(self, predictions: Sequence[Sequence[int]], examples: Sequence[SearchExample]) -> dict[str, float]:
        """Query i's answer is candidate i."""
        return rank_metrics(ranks_in(predictions, range(len(examples))))

    def embed(self, model: SentenceEncoder, texts: list[str], max_length: int, description: str) -> torch.Tensor:
        """The vectors evaluation ranks with, one per text (on the CPU)."""
        batches = list(self.eval_batches(texts))
        return embed_all(self.runtime, model, lambda batch: self.tokenize(batch, max_length), batches, description)
