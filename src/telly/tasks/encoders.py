"""Pieces shared by the tasks that turn a text into one vector (code search, clone detection)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from telly.runtime import Runtime


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors where attention_mask is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def encode_mean_pooled(encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One mean-pooled vector per input from a pre-trained encoder."""
    hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return mean_pool(hidden, attention_mask)


def embed_all(
    runtime: Runtime,
    embed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    tokenize: Callable[[Sequence[str]], dict[str, torch.Tensor]],
    batches: Sequence[Sequence[str]],
    description: str,
) -> torch.Tensor:
    """Vectors of every text in `batches`, in order, computed on the runtime's device (returned on the CPU)."""
    encoded = [tokenize(batch) for batch in batches]
    return torch.cat(runtime.infer(lambda batch: embed(batch["input_ids"], batch["attention_mask"]), encoded, description))
