"""Where the activation cache keeps its states: on the device, in host memory, or on disk.

A `StateStore` maps a key (a sequence's token ids) to one tensor (that sequence's prefix output),
in three tiers filled in order: the model's device while `device_limit` bytes allow (none on the
CPU, where the device is host memory), host memory up to `memory_limit`, and beyond that
safetensors shards in a spill folder, read back through a memory map.

Shards outlive an interrupted run and a new store on the folder takes them in, as long as each
shard's recorded fingerprint (of what the states depend on besides the input) is the store's; a
shard with another fingerprint is deleted, an unreadable one too (a warning).
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from telly.files import atomic_open, remove_temporaries

SHARD_BYTES = 64 * 2**20  # states beyond the memory limits wait in host memory until a shard of this size is full

log = logging.getLogger("telly")

Key = tuple[int, ...]


class _Spilled(NamedTuple):
    """Where a spilled state lives: a tensor of an open (memory-mapped) shard."""

    shard: object  # safetensors.safe_open
    name: str


class StateStore:
    """States by key. Without `spill_folder` every state stays in memory (and `fingerprint` is unused)."""

    def __init__(self, fingerprint: str | None = None, spill_folder: Path | None = None,
                 memory_limit: float = math.inf, device_limit: float = 0):
        self.fingerprint = fingerprint
        self.spill_folder = None if spill_folder is None else Path(spill_folder)
        self.memory_limit, self.device_limit = memory_limit, device_limit
        self.memory_bytes = 0  # of the states kept in host memory
        self.device_bytes = 0  # of the states kept on an accelerator
        self._states: dict[Key, torch.Tensor | _Spilled] = {}
        self._unwritten: list[Key] = []  # keys of states beyond the limits, not yet in a shard
        self._unwritten_bytes = 0
        if self.spill_folder is not None:
            self._open_shards()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: Key) -> bool:
        return key in self._states

    def add(self, key: Key, state: torch.Tensor) -> None:
        """Keep `state` (a tensor of its own, on the model's device) in the first tier it fits."""
        size = state.nbytes
        if state.device.type != "cpu" and self.device_bytes + size <= self.device_limit:
            self._states[key] = state
            self.device_bytes += size
            return
        self._states[key] = state.cpu()
        if self.memory_bytes + size <= self.memory_limit:
            self.memory_bytes += size
            return
        self._unwritten.append(key)
        self._unwritten_bytes += size
        if self._unwritten_bytes >= SHARD_BYTES:
            self.flush()

    def discard(self, key: Key) -> None:
        """Forget `key`'s state (if stored), freeing what it held in memory; a spilled state's shard
        stays on disk until its folder is deleted."""
        state = self._states.pop(key, None)
        if state is None or isinstance(state, _Spilled):
            return
        if key in self._unwritten:
            self._unwritten.remove(key)
            self._unwritten_bytes -= state.nbytes
        elif state.device.type != "cpu":
            self.device_bytes -= state.nbytes
        else:
            self.memory_bytes -= state.nbytes

    def get(self, key: Key) -> torch.Tensor:
        state = self._states[key]
        return state.shard.get_tensor(state.name) if isinstance(state, _Spilled) else state

    def flush(self) -> None:
        """Move the states beyond the memory limits into a new shard (a no-op when there are none)."""
        if not self._unwritten:
            return
        keys, path = self._unwritten, self.spill_folder / f"states-{uuid.uuid4().hex}.safetensors"
        tensors = {str(index): self._states[key] for index, key in enumerate(keys)}
        with atomic_open(path, "wb") as stream:
            stream.write(save(tensors, metadata={"fingerprint": self.fingerprint, "keys": json.dumps(keys)}))
        shard = safe_open(path, framework="pt")
        for index, key in enumerate(keys):
            self._states[key] = _Spilled(shard, str(index))
        self._unwritten, self._unwritten_bytes = [], 0

    def _open_shards(self) -> None:
        """Take in the shards an earlier store left with the same fingerprint; delete the others."""
        if not self.spill_folder.is_dir():
            return
        remove_temporaries(self.spill_folder)  # writes a kill interrupted
        outdated = 0
        for path in sorted(self.spill_folder.glob("*.safetensors")):
            try:
                shard = safe_open(path, framework="pt")
                metadata = shard.metadata() or {}
                if metadata.get("fingerprint") != self.fingerprint:
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
