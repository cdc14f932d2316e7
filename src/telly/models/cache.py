"""Frozen-prefix activation cache: run the embeddings and the bottom K blocks once per input.

When they are frozen, their output for a given input never changes, so training can start from
the stored output of block K-1 and run only the top L-K blocks. The model's own forward still runs
(so it builds its attention masks and position embeddings the way it always does); two swaps make
it skip the prefix:

- recording: block K is replaced by a recorder that stores its input (the prefix's output) per
  sequence and the blocks above it by pass-throughs, and a batch ends at its last encoder call (no
  LM head or new decoder runs but the first batch's), so one pass costs the frozen work only; an
  encoder call whose every sequence is stored already skips the frozen blocks too;
- replaying: blocks 0..K-1 are replaced by pass-throughs, and block K's input by the stored states;
- evaluating: replaying where every sequence of an encoder call is stored, else the whole model
  runs and block K's input is stored on the way, so that a later evaluation of the same valid or
  test inputs replays it;
- growing (progressive freezing, from K to a higher K'): replaying through block K, recording at
  block K', so the newly frozen blocks K..K'-1 run once over the stored states and the blocks
  below K not at all.

A block that is skipped still returns what the model's forward expects of a block: its family's
row of the layout table says what (`Layout.stand_in`: the hidden states alone, in a tuple, or with
T5's position bias). Rotary position embeddings (the Llama family) and masks are computed by the
model's forward and handed to every block, so they reach block K as they always do.

Stored states are looked up by the real tokens of each row (those its attention mask keeps, so
neither the padding side nor the pad id matters), so a task needs no change: whatever it encodes,
in any batch and order, finds its own prefix output. Each state holds its sequence's real tokens
only and is kept by a `StateStore`: on the model's device while a byte limit allows, then in host
memory up to another, beyond it in safetensors shards in a spill folder (`k<K>/` in the folder
given, one per K). Only calls of the encoder's
own forward count: a new decoder that embeds its targets with the encoder's embedding module (as
CodeXGLUE's code-to-text does) never enters it, and T5's decoder is a stack of its own.

The spill folder outlives an interrupted run, and a new cache on it reuses its K's shards while they
carry the cache's fingerprint of what the states depend on besides the input (K, the model's
configuration, the bytes of the embeddings' and blocks 0..K-1's weights). Data and length limits
need no fingerprint: a sequence truncated differently has other token ids, so other keys, and only
sequences whose key is not stored are computed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import torch
from torch import nn

from telly.models.layers import Backbone, find_backbone
from telly.models.state_store import StateStore


class _PassThrough(nn.Module):
    def __init__(self, cache: "FrozenPrefixCache"):
        super().__init__()
        self.cache = cache

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return self.cache._block_output(hidden_states, args, kwargs)


class _BatchRecorded(Exception):
    """Raised by the recorder once a batch's last encoder call is stored: the rest of the batch's
    forward (a decoder's LM head over its whole vocabulary, a new decoder) would be thrown away."""


class _Recorder(_PassThrough):
    """Stores its input (the prefix's output) into `store`; while the cache grows, the call's old
    states (those it was computed from) are then forgotten. Ends the batch after its last encoder
    call, once the first batch has counted them."""

    def __init__(self, cache: "FrozenPrefixCache", store: StateStore):
        super().__init__(cache)
        self.store = store

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        cache = self.cache
        cache._store(hidden_states, self.store)
        if cache._growing_into is not None:
            for key in cache._current_keys:
                cache.store.discard(key)
        cache._calls_in_batch += 1
        if cache._calls_in_batch == cache._calls_per_batch:
            raise _BatchRecorded
        return cache._block_output(hidden_states, args, kwargs)


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
    reused: int  # distinct sequences whose states were stored already (spilled by an earlier run, or evaluated)
    computed: int  # distinct sequences whose states this fill (or growth) computed


class FrozenPrefixCache:
    """Stored outputs of the frozen embeddings + bottom `k` blocks of `model`, keyed by real tokens.

    Without `spill_folder` every state stays where it was computed. With it, states are kept on an
    accelerator up to `device_limit` bytes, then in host memory up to `memory_limit`, and the rest
    are written to shards in its `k<K>/`; the valid shards already there are reused, another K's
    folder is deleted.
    """

    def __init__(self, model: nn.Module, k: int, spill_folder: Path | None = None,
                 memory_limit: int | None = None, device_limit: int = 0):
        backbone = find_backbone(model)
        if k < 0:
            raise ValueError("nothing is frozen (K=-1): there is no prefix to cache")
        if (spill_folder is None) != (memory_limit is None):
            raise ValueError("spill_folder and memory_limit go together")
        self.backbone, self.k = backbone, k
        self._first_block = backbone.blocks[0]  # kept: it is swapped out while the cache works
        self._encoder_arguments = inspect.signature(backbone.encoder.forward)
        self.spill_root = None if spill_folder is None else Path(spill_folder)
        self.memory_limit, self.device_limit = memory_limit, device_limit
        if self.spill_root is not None:  # another K's states are of no use
            for other in self.spill_root.glob("k*"):
                if other.name != f"k{k}":
                    shutil.rmtree(other)
        self.store = self._store_for(k)
        self.filled = False
        self._current_keys: list[tuple[int, ...]] = []
        self._current_mask: torch.Tensor | None = None  # which positions of the current call are real tokens
        self._seen: set[tuple[int, ...]] = set()  # distinct sequences the current fill met
        self._all_stored = False  # whether every sequence of the current encoder call is stored
        self._growing_into: StateStore | None = None  # while growing: the new states (self.store holds the old)
        self._calls_in_batch = 0  # while recording: encoder calls of the current batch so far
        self._calls_per_batch: int | None = None  # while recording: as many as the first batch made

    def __len__(self) -> int:
        return len(self.store)

    @property
    def spill_folder(self) -> Path | None:
        """Where the states of the current K spill (None: they stay in memory)."""
        return None if self.spill_root is None else self.spill_root / f"k{self.k}"

    @torch.no_grad()
    def fill(self, model: nn.Module, batches: Iterable[Callable[[], object]]) -> FillCounts:
        """Record the prefix output of every sequence the model sees while each of `batches` runs
        (each runs the task's forward on one batch).

        The model runs in eval mode (no dropout in the frozen part); nothing above the prefix runs
        but what the first batch needs to run to its end. Sequences stored already are not computed again.
        """
        prefix = [_SkippedWhenStored(self, block) for block in self.backbone.blocks[: self.k]]
        counts = self._record(model, self.store, prefix, batches)
        self.filled = True
        return counts

    @torch.no_grad()
    def grow(self, model: nn.Module, k: int, batches: Iterable[Callable[[], object]]) -> FillCounts:
        """Extend the cache to the bottom `k` blocks (> K, frozen since it was filled): the newly
        frozen blocks K..k-1 run once over the stored states of every sequence `batches` send (each
        must be stored); no block below them runs (the embeddings do, as when replaying).
        Each old state is dropped as soon as its new one is stored, so the cache holds about as much
        as before while it grows; the old states `batches` do not send (evaluation inputs) go at the
        end, and so do their spilled shards.
        """
        if k <= self.k:
            raise ValueError(f"the cache holds the bottom {self.k} blocks already; it grows to more, not {k}")
        grown = self._store_for(k)
        blocks = self.backbone.blocks
        replayed = [_PassThrough(self) for _ in range(self.k)] + list(blocks[self.k : k])
        self._growing_into = grown
        try:
            with self._hooked_block_k_input(self._replay_input):  # block K, the first newly frozen one
                counts = self._record(model, grown, replayed, batches, at=k)
        finally:
            self._growing_into = None
        old_folder, self.store, self.k = self.spill_folder, grown, k
        if old_folder is not None:
            shutil.rmtree(old_folder, ignore_errors=True)
        return counts

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Inside this block the model starts from the stored states and runs only the top blocks."""
        with self._swapped([_PassThrough(self) for _ in range(self.k)]), self._watching_encoder_calls(), \
                self._hooked_block_k_input(self._replay_input):
            yield

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Inside this block (the model in eval mode), an encoder call whose every sequence is stored
        starts from the stored states, as when replaying; any other call runs the frozen blocks and
        stores what they hand to block K. Valid and test inputs so go through the frozen prefix once
        per run, whatever the number of evaluations.

        Only calls that read whole inputs may run here: a causal LM generating token by token needs
        its frozen blocks' keys and values of the prompt at every later step, which are not stored.
        The new states go into the same tiers as the training sequences' (within the same limits).
        """
        try:
            with self._swapped([_SkippedWhenStored(self, block) for block in self.backbone.blocks[: self.k]]), \
                    self._watching_encoder_calls(), self._hooked_block_k_input(self._replay_or_store_input):
                yield
        finally:
            self.store.flush()

    # Internals.

    def _store_for(self, k: int) -> StateStore:
        """The store of the bottom `k` blocks' states: in memory, or spilling to its own folder
        (taking in the valid shards an earlier run left there). Made while no block is swapped for a
        wrapper: the fingerprint reads the blocks' weights."""
        if self.spill_root is None:
            return StateStore(device_limit=math.inf)
        return StateStore(prefix_fingerprint(self.backbone, k), self.spill_root / f"k{k}", self.memory_limit,
                          self.device_limit)

    def _record(self, model: nn.Module, store: StateStore, below: list[nn.Module],
                batches: Iterable[Callable[[], object]], at: int | None = None) -> FillCounts:
        """Run each of `batches` in eval mode (no dropout in the frozen part) with blocks 0.. replaced
        by `below`, block `at` (default K) by a recorder into `store` and the blocks above it by
        pass-throughs. The first batch runs to its end and counts its encoder calls (code search
        makes two, for queries and code); every later one stops after as many, so the rest of the
        model runs once in all. A later batch with more calls would leave its last ones unstored
        and fail loudly at replay; with fewer, it runs to its end."""
        at = self.k if at is None else at
        was_training = model.training
        model.eval()
        top = [_Recorder(self, store)] + [_PassThrough(self) for _ in self.backbone.blocks[at + 1 :]]
        stored_before, self._seen, self._calls_per_batch = len(store), set(), None
        with self._swapped(below + top), self._watching_encoder_calls(remember=True):
            for run_batch in batches:
                self._calls_in_batch = 0
                try:
                    run_batch()
                except _BatchRecorded:
                    continue
                if self._calls_per_batch is None:  # the first batch, which ran to its end
                    self._calls_per_batch = self._calls_in_batch
        store.flush()
        model.train(was_training)
        computed = len(store) - stored_before
        return FillCounts(reused=len(self._seen) - computed, computed=computed)

    def _block_output(self, hidden_states: torch.Tensor, args: tuple, kwargs: dict):
        return self.backbone.layout.stand_in(hidden_states, args, kwargs, self._first_block)

    def _encoder_call(self, module, args, kwargs, remember: bool = False):
        """Before each call of the encoder's forward: the keys (real tokens) of its rows."""
        bound = self._encoder_arguments.bind_partial(*args, **kwargs).arguments
        input_ids, mask = bound.get("input_ids"), bound.get("attention_mask")
        self._current_mask = (torch.ones_like(input_ids) if mask is None else mask).bool()
        self._current_keys = [tuple(row[real].tolist()) for row, real in zip(input_ids, self._current_mask)]
        self._all_stored = all(key in self.store for key in self._current_keys)
        if remember:
            self._seen.update(self._current_keys)

    def _store(self, hidden_states: torch.Tensor, store: StateStore) -> None:
        for key, states, real in zip(self._current_keys, hidden_states, self._current_mask):
            if key not in store:
                store.add(key, states[real].clone())

    def _replay_input(self, block, args, kwargs):
        """Block K's forward pre-hook while replaying: its input becomes the stored states."""
        if args:
            return (self._stored_states(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": self._stored_states(kwargs["hidden_states"])}

    def _replay_or_store_input(self, block, args, kwargs):
        """Block K's forward pre-hook while evaluating: the stored states replace its input when every
        sequence of the call is stored; otherwise the input, just computed, is stored and kept."""
        if self._all_stored:
            return self._replay_input(block, args, kwargs)
        self._store(args[0] if args else kwargs["hidden_states"], self.store)
        return None

    def _stored_states(self, like: torch.Tensor) -> torch.Tensor:
        """The stored states of the current call's sequences, at their real positions in the shape of `like`."""
        replayed = torch.zeros_like(like)
        for row, (key, real) in enumerate(zip(self._current_keys, self._current_mask)):
            if key in self.store:
                replayed[row, real] = self.store.get(key).to(like)  # from the tier's device, in the call's precision
            elif self._growing_into is None or key not in self._growing_into:
                raise KeyError("an input missing from the activation cache (was it filled with the training data?)")
            # else a sequence met again while growing: its new state is stored, this row's output unused
        return replayed

    @contextmanager
    def _swapped(self, replacements: Iterable[nn.Module]) -> Iterator[None]:
        """Blocks 0.. replaced by `replacements` while the block runs."""
        blocks = self.backbone.blocks
        replacements = list(replacements)
        originals = [blocks[i] for i in range(len(replacements))]
        try:
            for i, replacement in enumerate(replacements):
                blocks[i] = replacement
            yield
        finally:
            for i, original in enumerate(originals):
                blocks[i] = original

    @contextmanager
    def _hooked_block_k_input(self, hook: Callable) -> Iterator[None]:
        """`hook` is block K's forward pre-hook (with keyword arguments) while the block runs."""
        handle = self.backbone.blocks[self.k].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def _watching_encoder_calls(self, remember: bool = False) -> Iterator[None]:
        def before(module, args, kwargs):
            self._encoder_call(module, args, kwargs, remember)

        handle = self.backbone.encoder.register_forward_pre_hook(before, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()


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
