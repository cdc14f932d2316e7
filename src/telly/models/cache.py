"""Frozen-prefix activation cache: run the embeddings and the bottom K blocks once per input.

When they are frozen, their output for a given input never changes, so training can start from
the stored output of block K-1 and run only the top L-K blocks. The model's own forward still runs
(so it builds its attention masks the way it always does); two swaps make it skip the prefix:

- recording: block K is replaced by a recorder that stores its input (the prefix's output) per
  sequence and the blocks above it by pass-throughs, so one pass costs the frozen work only; an
  encoder call whose every sequence is stored already skips the frozen blocks too;
- replaying: blocks 0..K-1 are replaced by stand-ins, the first of which hands on the stored
  states (at K=0 they replace the embeddings' output). T5's stand-ins also hand on the relative
  position bias that its first block would have computed.

Stored states are looked up by the token ids of each row (padding stripped), so a task needs no
change: whatever it encodes, in any batch and order, finds its own prefix output. Each state is
trimmed to its sequence's real length and kept by a `StateStore`: on the model's device while a
byte limit allows, then in host memory up to another, beyond it in safetensors shards in a spill
folder. Only calls of the embeddings made by the encoder's own forward count: a new decoder that
embeds its targets with the encoder's embedding module (as CodeXGLUE's code-to-text does) gets
real embeddings, so encoder-decoder tasks are served too; T5's decoder has an embedding module of
its own (sharing the weight).

The spill folder outlives an interrupted run, and a new cache on it reuses its shards while they
carry the cache's fingerprint of what the states depend on besides the input (K, the model's
configuration, the bytes of the embeddings' and blocks 0..K-1's weights). Data and length limits
need no fingerprint: a sequence truncated differently has other token ids, so other keys, and only
sequences whose key is not stored are computed.
"""

from __future__ import annotations

import hashlib
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import torch
from torch import nn

from telly.errors import UserError
from telly.models.layers import Backbone, find_backbone
from telly.models.state_store import StateStore

SUPPORTED_FAMILIES = ("bert-like", "t5")


class _PassThrough(nn.Module):
    def __init__(self, cache: "FrozenPrefixCache"):
        super().__init__()
        self.cache = cache

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return self.cache._block_output(hidden_states, args, kwargs)


class _Recorder(_PassThrough):
    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        self.cache._store(hidden_states)
        return self.cache._block_output(hidden_states, args, kwargs)


class _Replayer(_PassThrough):
    """Stands in for block 0 while replaying: hands on the stored states instead of its input."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return self.cache._block_output(self.cache._stored_states(hidden_states), args, kwargs)


class _SkippedWhenStored(nn.Module):
    """A frozen block that does no work in an encoder call whose every sequence is stored already."""

    def __init__(self, cache: "FrozenPrefixCache", block: nn.Module):
        super().__init__()
        self.cache, self.block = cache, block

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        if self.cache._all_stored:
            return self.cache._block_output(hidden_states, args, kwargs)
        return self.block(hidden_states, *args, **kwargs)


class FillCounts(NamedTuple):
    reused: int  # distinct sequences whose states were stored already (spilled by an earlier run)
    computed: int  # distinct sequences whose states this fill computed


def cache_supported(model: nn.Module) -> bool:
    return find_backbone(model).family in SUPPORTED_FAMILIES


class FrozenPrefixCache:
    """Stored outputs of the frozen embeddings + bottom `k` blocks of `model`, keyed by token ids.

    Without `spill_folder` every state stays where it was computed. With it, states are kept on an
    accelerator up to `device_limit` bytes, then in host memory up to `memory_limit`, and the rest
    are written to shards there; the valid shards already there are reused.
    """

    def __init__(self, model: nn.Module, k: int, pad_id: int, spill_folder: Path | None = None,
                 memory_limit: int | None = None, device_limit: int = 0):
        backbone = find_backbone(model)
        if backbone.family not in SUPPORTED_FAMILIES:
            raise UserError(f"the activation cache supports {', '.join(SUPPORTED_FAMILIES)} models, "
                            f"not {backbone.family}; pass --no-cache")
        if k < 0:
            raise ValueError("nothing is frozen (K=-1): there is no prefix to cache")
        if (spill_folder is None) != (memory_limit is None):
            raise ValueError("spill_folder and memory_limit go together")
        self.backbone, self.k, self.pad_id = backbone, k, pad_id
        self._first_block = backbone.blocks[0]  # kept: it is swapped out while the cache works
        self.spill_folder = None if spill_folder is None else Path(spill_folder)
        if spill_folder is None:
            self.store = StateStore(device_limit=math.inf)
        else:  # the fingerprint now, while no block is swapped for a wrapper
            self.store = StateStore(prefix_fingerprint(backbone, k), spill_folder, memory_limit, device_limit)
        self.filled = False
        self._current_keys: list[tuple[int, ...]] = []
        self._seen: set[tuple[int, ...]] = set()  # distinct sequences the current fill met
        self._all_stored = False  # whether every sequence of the current encoder call is stored
        self._encoder_calls = 0  # > 0 while the encoder's own forward runs

    def __len__(self) -> int:
        return len(self.store)

    @torch.no_grad()
    def fill(self, model: nn.Module, run_batches: Callable[[], None]) -> FillCounts:
        """Record the prefix output of every sequence the model sees while `run_batches()` runs.

        The model runs in eval mode (no dropout in the frozen part); what the rest of the model
        computes in this pass is thrown away. Sequences stored already are not computed again.
        """
        was_training = model.training
        model.eval()
        blocks = self.backbone.blocks
        prefix = [_SkippedWhenStored(self, block) for block in blocks[: self.k]]
        top = [_Recorder(self)] + [_PassThrough(self) for _ in blocks[self.k + 1 :]]
        stored_before, self._seen = len(self), set()
        with self._swapped(0, prefix + top), self._embedding_hook(self._remember_keys):
            run_batches()
        self.store.flush()
        model.train(was_training)
        self.filled = True
        computed = len(self) - stored_before
        return FillCounts(reused=len(self._seen) - computed, computed=computed)

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Inside this block the model starts from the stored states and runs only the top blocks."""
        # At K>0 the states enter in place of block 0's input, past anything the model does between
        # its embeddings and its blocks (T5's dropout); at K=0 they are the embeddings' output.
        stand_ins = [_Replayer(self)] + [_PassThrough(self) for _ in range(1, self.k)] if self.k else []
        with self._swapped(0, stand_ins), self._embedding_hook(self._replay_embeddings):
            yield

    # Internals.

    def _block_output(self, hidden_states: torch.Tensor, args: tuple, kwargs: dict):
        """What a skipped block hands on. BERT-like blocks return the hidden states; T5 blocks also
        the self-attention position bias, which the first block computes (from the sequence length
        alone) and every later block reuses — so a stand-in for the first block computes it too."""
        if self.backbone.family != "t5":
            return hidden_states
        # T5Stack calls block(hidden_states, attention_mask, position_bias, ...).
        position_bias = args[1] if len(args) > 1 else kwargs.get("position_bias")
        if position_bias is None:
            length = hidden_states.shape[1]
            position_bias = self._first_block.layer[0].SelfAttention.compute_bias(length, length, device=hidden_states.device)
        return hidden_states, position_bias, None

    def _keys(self, input_ids: torch.Tensor) -> list[tuple[int, ...]]:
        keys = []
        for row in input_ids.tolist():
            while row and row[-1] == self.pad_id:
                row.pop()
            keys.append(tuple(row))
        return keys

    def _remember_keys(self, module, args, kwargs, output):
        self._current_keys = self._keys(kwargs.get("input_ids", args[0] if args else None))
        self._seen.update(self._current_keys)
        self._all_stored = all(key in self.store for key in self._current_keys)
        return output

    def _store(self, hidden_states: torch.Tensor) -> None:
        for key, states in zip(self._current_keys, hidden_states):
            if key not in self.store:
                self.store.add(key, states[: len(key)].clone())

    def _replay_embeddings(self, module, args, kwargs, output: torch.Tensor) -> torch.Tensor:
        """The embeddings' output hook while replaying: the call's keys; at K=0 also its stored states."""
        self._current_keys = self._keys(kwargs.get("input_ids", args[0] if args else None))
        return self._stored_states(output) if self.k == 0 else output

    def _stored_states(self, like: torch.Tensor) -> torch.Tensor:
        """The stored states of the current call's sequences, padded to the shape of `like`."""
        replayed = torch.zeros_like(like)
        for row, key in enumerate(self._current_keys):
            if key not in self.store:
                raise KeyError("an input missing from the activation cache (was it filled with the training data?)")
            replayed[row, : len(key)] = self.store.get(key)  # copied across devices where the tier is another
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
            self.backbone.encoder.register_forward_pre_hook(enter),
            self.backbone.encoder.register_forward_hook(leave, always_call=True),
            self.backbone.embeddings[0].register_forward_hook(encoder_only, with_kwargs=True),
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._encoder_calls = 0


def prefix_fingerprint(backbone: Backbone, k: int) -> str:
    """sha256 of what the prefix's output depends on besides the input: K, the model's configuration
    and the weights of the embeddings and blocks 0..K-1 (in module order, with names, dtypes, shapes)."""
    digest = hashlib.sha256(json.dumps({"k": k}).encode())
    digest.update(backbone.root.config.to_json_string(use_diff=False).encode())
    for index, module in enumerate((*backbone.embeddings, *backbone.blocks[:k])):
        for name, tensor in module.state_dict().items():
            digest.update(f"{index}.{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy())
    return digest.hexdigest()
