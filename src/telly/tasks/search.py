"""Code search (CodeXGLUE / UniXcoder style): one shared encoder embeds queries and code.

Mean pooling over non-padding tokens, L2-normalised; training uses in-batch negatives with
cosine similarities scaled by 20; evaluation ranks every query against every test candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from telly.data.formats import read_codesearchnet_split
from telly.metrics import retrieval_metrics
from telly.tasks.base import Task

SIMILARITY_SCALE = 20.0


@dataclass(frozen=True)
class SearchExample:
    query: str
    code: str


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors where attention_mask is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class SentenceEncoder(nn.Module):
    """A pre-trained encoder that returns one L2-normalised vector per input."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(mean_pool(hidden, attention_mask), dim=-1)


class CodeSearchTask(Task):
    name = "code-search"
    selection_metric = "mrr"

    def read_split(self, data_dir: Path, split: str) -> list[SearchExample]:
        records = read_codesearchnet_split(data_dir, split, required=("code_tokens", "docstring_tokens"))
        return [
            SearchExample(query=" ".join(r["docstring_tokens"]), code=" ".join(r["code_tokens"]))
            for r in records
        ]

    def build_model(self, pretrained: nn.Module) -> nn.Module:
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

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        queries = model(batch["query_ids"], batch["query_mask"])
        code = model(batch["code_ids"], batch["code_mask"])
        logits = SIMILARITY_SCALE * queries @ code.T
        return F.cross_entropy(logits, torch.arange(len(queries)))

    def evaluate(self, model: nn.Module, examples: Sequence[SearchExample], description: str) -> dict[str, float]:
        queries = self._embed(model, [e.query for e in examples], self.config.max_nl_len, f"{description} queries")
        code = self._embed(model, [e.code for e in examples], self.config.max_code_len, f"{description} code")
        return retrieval_metrics((queries @ code.T).numpy())

    def _embed(self, model: nn.Module, texts: list[str], max_length: int, description: str) -> torch.Tensor:
        vectors = []
        batches = list(self.eval_batches(texts))
        for batch in tqdm(batches, desc=description, leave=False, disable=None):
            encoded = self.tokenize(batch, max_length)
            vectors.append(model(encoded["input_ids"], encoded["attention_mask"]))
        return torch.cat(vectors)
