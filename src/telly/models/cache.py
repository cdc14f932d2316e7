"""Frozen-prefix activation cache: run the embeddings and the bottom K blocks once per input.

When they are frozen, their output for a given input never changes, so training can start from
the stored output of block K-1 and run only the top L-K blocks. The model's own forward still runs
(so it builds its attention masks the way it always does); two swaps make it skip the prefix:

- recording: block K is replaced by a recorder that stores its input (the prefix's output) per
  sequence and the blocks above it by pass-throughs, so one pass costs the frozen work only;
- replaying: the embeddings' output is replaced by the stored hidden states and blocks 0..K-1 by
  pass-throughs.

Stored states are looked up by the token ids of each row (padding stripped), so a task needs no
change: whatever it encodes, in any batch and order, finds its own prefix output. Kept in memory,
trimmed to each sequence's real length. Only calls of the embeddings made by the encoder's own
forward count: a new decoder that embeds its targets with the encoder's embedding module (as
CodeXGLUE's code-to-text does) gets real embeddings, so encoder-decoder tasks are served too.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from telly.errors import UserError
from telly.models.layers import find_backbone

SUPPORTED_FAMILIES = ("bert-like",)


class _PassThrough(nn.Module):
    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


class _Recorder(nn.Module):
    def __init__(self, cache: "FrozenPrefixCache"):
        super().__init__()
        self.cache = cache

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        self.cache._store(hidden_states)
        return hidden_states


def cache_supported(model: nn.Module) -> bool:
    return find_backbone(model).family in SUPPORTED_FAMILIES


class FrozenPrefixCache:
    """Stored outputs of the frozen embeddings + bottom `k` blocks of `model`, keyed by token ids."""

    def __init__(self, model: nn.Module, k: int, pad_id: int):
        backbone = find_backbone(model)
        if backbone.family not in SUPPORTED_FAMILIES:
            raise UserError(f"the activation cache supports {', '.join(SUPPORTED_FAMILIES)} models, "
                            f"not {backbone.family}; pass --no-cache")
        if k < 0:
            raise ValueError("nothing is frozen (K=-1): there is no prefix to cache")
        self.backbone, self.k, self.pad_id = backbone, k, pad_id
        self.entries: dict[tuple[int, ...], torch.Tensor] = {}
        self._current_ids: torch.Tensor | None = None
        self._encoder_calls = 0  # > 0 while the encoder's own forward runs

    def __len__(self) -> int:
        return len(self.entries)

    @torch.no_grad()
    def fill(self, model: nn.Module, run_batches: Callable[[], None]) -> None:
        """Record the prefix output of every sequence the model sees while `run_batches()` runs.

        The model runs in eval mode (no dropout in the frozen part); what the rest of the model
        computes in this pass is thrown away.
        """
        was_training = model.training
        model.eval()
        blocks = self.backbone.blocks
        top = [_Recorder(self)] + [_PassThrough() for _ in blocks[self.k + 1 :]]
        with self._swapped(self.k, top), self._embedding_hook(self._remember_ids):
            run_batches()
        model.train(was_training)

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Inside this block the model starts from the stored states and runs only the top blocks."""
        with self._swapped(0, [_PassThrough() for _ in range(self.k)]), self._embedding_hook(self._replay):
            yield

    # Internals.

    def _keys(self, input_ids: torch.Tensor) -> list[tuple[int, ...]]:
        keys = []
        for row in input_ids.tolist():
            while row and row[-1] == self.pad_id:
                row.pop()
            keys.append(tuple(row))
        return keys

    def _remember_ids(self, module, args, kwargs, output):
        self._current_ids = kwargs.get("input_ids", args[0] if args else None)
        return output

    def _store(self, hidden_states: torch.Tensor) -> None:
        for key, states in zip(self._keys(self._current_ids), hidden_states):
            self.entries.setdefault(key, states[: len(key)].clone())

    def _replay(self, module, args, kwargs, output: torch.Tensor) -> torch.Tensor:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        replayed = torch.zeros_like(output)
        for row, key in enumerate(self._keys(input_ids)):
            if key not in self.entries:
                raise KeyError("an input missing from the activation cache (was it filled with the training data?)")
            replayed[row, : len(key)] = self.entries[key]
        return replayed

    @contextmanager
    def _swapped(self, start: int, replacements: Iterable[nn.Module]) -> Iterator[None]:
        blocks = self.backbone.blocks
        replacements = list(replacements)
        originals = [blocks[start + i] for i in range(len(replacements))]
        try:
            for i, replacement in enumerate(replacements):
                blocks[start + i] = replacement
            yield
        finally:
            for i, original in enumerate(originals):
                blocks[start + i] = original

    @contextmanager
    def _embedding_hook(self, hook) -> Iterator[None]:
        """`hook` on the embeddings' output, for calls from inside the encoder's forward only."""

        def enter(*_):
            self._encoder_calls += 1

        def leave(*_):
            self._encoder_calls -= 1

        def encoder_only(module, args, kwargs, output):
            return hook(module, args, kwargs, output) if self._encoder_calls else output

        handles = [
            self.backbone.root.register_forward_pre_hook(enter),
            self.backbone.root.register_forward_hook(leave, always_call=True),
            self.backbone.embeddings[0].register_forward_hook(encoder_only, with_kwargs=True),
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._encoder_calls = 0
