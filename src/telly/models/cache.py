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
trimmed to its sequence's real length and kept in memory up to a byte limit; beyond it, states are
written to safetensors shards in a spill folder and read back through a memory map when replayed.
Only calls of the embeddings made by the encoder's own forward count: a new decoder that embeds
its targets with the encoder's embedding module (as CodeXGLUE's code-to-text does) gets real
embeddings, so encoder-decoder tasks are served too; T5's decoder has an embedding module of its
own (sharing the weight).

The spill folder outlives an interrupted run, and a new cache on it reuses its shards: each shard
records a fingerprint of what the states depend on besides the input (K, the model's
configuration, the bytes of the embeddings' and blocks 0..K-1's weights). A shard with another
fingerprint is deleted, an unreadable one too (a warning); their states are computed again. Data
and length limits need no fingerprint: a sequence truncated differently has other token ids, so
other keys, and only sequences whose key is not stored are computed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from telly.errors import UserError
from telly.files import atomic_open
from telly.models.layers import Backbone, find_backbone

SUPPORTED_FAMILIES = ("bert-like", "t5")
SPILL_FOLDER = "activation-cache"  # inside the run folder
SHARD_BYTES = 64 * 2**20  # states beyond the memory limit wait in memory until a shard of this size is full

log = logging.getLogger("telly")


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


class _Spilled(NamedTuple):
    """Where a spilled state lives: a tensor of an open (memory-mapped) shard."""

    shard: object  # safetensors.safe_open
    name: str


class FillCounts(NamedTuple):
    reused: int  # distinct sequences whose states were stored already (spilled by an earlier run)
    computed: int  # distinct sequences whose states this fill computed


def cache_supported(model: nn.Module) -> bool:
    return find_backbone(model).family in SUPPORTED_FAMILIES


class FrozenPrefixCache:
    """Stored outputs of the frozen embeddings + bottom `k` blocks of `model`, keyed by token ids.

    Without `spill_folder` every state stays in memory. With it, states beyond `memory_limit` bytes
    are written to shards there, and the valid shards already there are reused.
    """

    def __init__(self, model: nn.Module, k: int, pad_id: int, spill_folder: Path | None = None,
                 memory_limit: int | None = None):
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
        self.memory_limit = math.inf if memory_limit is None else memory_limit
        self.memory_bytes = 0  # of the states kept in memory
        self.filled = False
        self._states: dict[tuple[int, ...], torch.Tensor | _Spilled] = {}
        self._unwritten: list[tuple[int, ...]] = []  # keys of states beyond the limit, not yet in a shard
        self._unwritten_bytes = 0
        self._current_keys: list[tuple[int, ...]] = []
        self._seen: set[tuple[int, ...]] = set()  # distinct sequences the current fill met
        self._all_stored = False  # whether every sequence of the current encoder call is stored
        self._encoder_calls = 0  # > 0 while the encoder's own forward runs
        if self.spill_folder is not None:
            self._fingerprint = prefix_fingerprint(backbone, k)  # now, while no block is swapped for a wrapper
            self._open_shards()

    def __len__(self) -> int:
        return len(self._states)

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
        self._write_shard()
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
        self._all_stored = all(key in self._states for key in self._current_keys)
        return output

    def _store(self, hidden_states: torch.Tensor) -> None:
        for key, states in zip(self._current_keys, hidden_states):
            if key in self._states:
                continue
            state = self._states[key] = states[: len(key)].clone()
            if self.memory_bytes + state.nbytes <= self.memory_limit:
                self.memory_bytes += state.nbytes
            else:
                self._unwritten.append(key)
                self._unwritten_bytes += state.nbytes
                if self._unwritten_bytes >= SHARD_BYTES:
                    self._write_shard()

    def _write_shard(self) -> None:
        """Move the states beyond the memory limit into a new shard (a no-op when there are none)."""
        if not self._unwritten:
            return
        keys, path = self._unwritten, self.spill_folder / f"states-{uuid.uuid4().hex}.safetensors"
        tensors = {str(index): self._states[key] for index, key in enumerate(keys)}
        with atomic_open(path, "wb") as stream:
            stream.write(save(tensors, metadata={"fingerprint": self._fingerprint, "keys": json.dumps(keys)}))
        shard = safe_open(path, framework="pt")
        for index, key in enumerate(keys):
            self._states[key] = _Spilled(shard, str(index))
        self._unwritten, self._unwritten_bytes = [], 0

    def _open_shards(self) -> None:
        """Take in the shards an earlier cache left with the same fingerprint; delete the others."""
        if not self.spill_folder.is_dir():
            return
        for unfinished in self.spill_folder.glob(".*.tmp"):  # a write a kill interrupted
            unfinished.unlink()
        outdated = 0
        for path in sorted(self.spill_folder.glob("*.safetensors")):
            try:
                shard = safe_open(path, framework="pt")
                metadata = shard.metadata() or {}
                if metadata.get("fingerprint") != self._fingerprint:
                    outdated += 1
                    path.unlink()
                    continue
                keys = [tuple(key) for key in json.loads(metadata["keys"])]
                if len(keys) != len(shard.keys()):
                    raise ValueError(f"{len(keys)} keys for {len(shard.keys())} tensors")
            except (SafetensorError, OSError, ValueError, KeyError, TypeError) as error:
                log.warning("activation cache: %s is damaged (%s); its states are computed again", path, error)
                path.unlink()
                continue
            for index, key in enumerate(keys):
                self._states.setdefault(key, _Spilled(shard, str(index)))
        if outdated:
            log.info("activation cache: %d shards in %s were made with another frozen prefix; deleted",
                     outdated, self.spill_folder)

    def _replay_embeddings(self, module, args, kwargs, output: torch.Tensor) -> torch.Tensor:
        """The embeddings' output hook while replaying: the call's keys; at K=0 also its stored states."""
        self._current_keys = self._keys(kwargs.get("input_ids", args[0] if args else None))
        return self._stored_states(output) if self.k == 0 else output

    def _stored_states(self, like: torch.Tensor) -> torch.Tensor:
        """The stored states of the current call's sequences, padded to the shape of `like`."""
        replayed = torch.zeros_like(like)
        for row, key in enumerate(self._current_keys):
            state = self._states.get(key)
            if state is None:
                raise KeyError("an input missing from the activation cache (was it filled with the training data?)")
            replayed[row, : len(key)] = state.shard.get_tensor(state.name) if isinstance(state, _Spilled) else state
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
