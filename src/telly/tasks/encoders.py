"""Pieces shared by the tasks that turn a text into one vector (code search, clone detection).

How a model's token states become one vector is its family's (`Layout.pooling`): the mean over the
real tokens for an encoder, the last real token for a causal decoder (the only one that has seen
the whole input). A decoder's positions count real tokens only, so the tokenizer may pad on either side.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from telly.models.layers import find_backbone
from telly.runtime import Runtime


def real_token_positions(attention_mask: torch.Tensor, first: int = 0) -> torch.Tensor:
    """Position ids that count only the real tokens (padding on the left or right changes nothing)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0) + first


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors where attention_mask is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The vector of each row's last real token, wherever the padding is."""
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
    last = (positions * attention_mask).argmax(dim=1)
    return hidden[torch.arange(len(hidden), device=hidden.device), last]


POOLINGS = {"mean": mean_pool, "last": last_token_pool}


def encode_pooled(encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One vector per input from a pre-trained model, pooled as its family's row says."""
    layout = find_backbone(encoder).layout
    positions = {"position_ids": real_token_positions(attention_mask)} if layout.decoder_only else {}
    hidden = encoder(input_ids=input_ids, attention_mask=attention_mask, **positions).last_hidden_state
    return POOLINGS[layout.pooling](hidden, attention_mask)


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
