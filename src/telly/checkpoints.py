"""Resumable training state, written so that a kill at any moment loses nothing already saved.

A checkpoint is a folder `RUN/checkpoints/step-NNNNNNNN/` holding
- `model.safetensors`: the trainable parameters (the frozen ones are the pre-trained weights),
- `optimizer.safetensors`: the optimizer's tensors (AdamW moments and step counts),
- `rng.safetensors`: torch's RNG states (the CPU's, and each CUDA device's when CUDA is in use),
- `state.json`: where training stands (`TrainingState`), the optimizer's, scheduler's and fp16
  loss scaler's other values, Python's and NumPy's RNG states, and the sha256 of each file above.
It is written into a temporary folder, every file fsynced, then renamed into place in one step,
so a folder named `step-*` is complete. Reading checks every hash; a damaged or partial
checkpoint is reported and the one before it is used. The newest KEEP checkpoints are kept.
No file is ever unpickled: tensors are safetensors and everything else is JSON.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from telly.files import atomic_path, file_sha256, json_text, parse_json, remove_temporaries

CHECKPOINTS = "checkpoints"
KEEP = 2
_PREFIX = "step-"
_TENSOR_FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")

log = logging.getLogger("telly")


@dataclass
class TrainingState:
    """Where a run stands. `epoch` is the epoch in progress; `step_in_epoch` batches of it are done."""

    epoch: int = 1
    step_in_epoch: int = 0
    global_step: int = 0
    losses_since_evaluation: list[float] = field(default_factory=list)
    epoch_seconds: float = 0.0  # spent on the epoch in progress so far
    epoch_durations: list[float] = field(default_factory=list)  # of the finished epochs
    train_seconds: float = 0.0  # all training so far (evaluation not counted)
    evaluations_done: int = 0
    evaluations_since_best: int = 0  # validations in a row that did not improve on the best score
    stopped_early: bool = False  # --patience ran out
    # --freeze progressive: the K trained with now, each block's gradient norm summed over the last
    # interval and over the one in progress, and each K with the step and time it began.
    frozen_k: int | None = None
    interval_norms: list[float] | None = None
    current_norms: list[float] | None = None
    freezing: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    best_score: float | None = None  # None until the first evaluation
    best_epoch: int = 0
    best_valid: dict | None = None
    zero_shot: dict | None = None

    def next_epoch(self) -> None:
        self.epoch, self.step_in_epoch, self.epoch_seconds = self.epoch + 1, 0, 0.0


class CorruptCheckpoint(Exception):
    pass


def save_checkpoint(run: Path, model: nn.Module, optimizer, scheduler, state: TrainingState,
                    scaler: torch.amp.GradScaler | None = None) -> Path:
    """Write a checkpoint of the run as it stands; returns its folder."""
    folder = Path(run) / CHECKPOINTS
    final = folder / f"{_PREFIX}{state.global_step:08d}"
    # Complete or absent, also on a full disk; the same step saved before a kill is replaced whole.
    with atomic_path(final) as temporary:
        temporary.mkdir()
        optimizer_tensors, optimizer_values = _split_optimizer_state(optimizer.state_dict())
        trained = _trained_parameters(optimizer)
        save_file({name: p.detach().contiguous() for name, p in model.named_parameters() if id(p) in trained},
                  temporary / "model.safetensors")
        save_file(optimizer_tensors, temporary / "optimizer.safetensors")
        rng_states, rng_tensors = rng_snapshot()
        save_file(rng_tensors, temporary / "rng.safetensors")
        document = {
            "state": dataclasses.asdict(state),
            "optimizer": optimizer_values,
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},  # empty unless fp16
            "rng": rng_states,
            "files": {name: file_sha256(temporary / name) for name in _TENSOR_FILES},
        }
        (temporary / "state.json").write_text(json_text(document, final / "state.json"), encoding="utf-8")
    for old in _checkpoints(folder)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_latest_checkpoint(run: Path, model: nn.Module, optimizer, scheduler,
                           scaler: torch.amp.GradScaler | None = None) -> TrainingState | None:
    """Restore the newest complete checkpoint into model, optimizer, scheduler, loss scaler and the RNGs.

    Damaged checkpoints are logged and skipped, falling back to older ones; None when there is none.
    Temporary folders of checkpoints that a kill interrupted are removed.
    """
    folder = Path(run) / CHECKPOINTS
    remove_temporaries(folder)
    for checkpoint in _checkpoints(folder):
        try:
            document, tensors = _read_verified(checkpoint)
        except CorruptCheckpoint as problem:
            log.warning("checkpoint %s is damaged (%s); trying the one before it", checkpoint.name, problem)
            continue
        trained = _trained_parameters(optimizer)
        if set(tensors["model"]) != {name for name, p in model.named_parameters() if id(p) in trained}:
            log.warning("checkpoint %s holds other parameters than this run trains; trying the one before it", checkpoint.name)
            continue
        model.load_state_dict(tensors["model"], strict=False)
        optimizer.load_state_dict(_join_optimizer_state(tensors["optimizer"], document["optimizer"]))
        scheduler.load_state_dict(document["scheduler"])
        if scaler is not None and document.get("scaler"):
            scaler.load_state_dict(document["scaler"])
        restore_rng(document["rng"], tensors["rng"])
        log.info("resuming from %s", checkpoint.name)
        return TrainingState(**document["state"])
    return None


def _trained_parameters(optimizer) -> set[int]:
    """The ids of the parameters the optimizer updates: what a checkpoint holds (all that can have
    changed since the start, also those --freeze progressive has frozen since)."""
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def rng_snapshot() -> tuple[dict, dict[str, torch.Tensor]]:
    """The RNG states as `load_latest_checkpoint` restores them (for restoring after other work):
    Python's and NumPy's as JSON values, torch's (CPU, and each CUDA device once CUDA is in use) as tensors."""
    python_version, python_state, python_gauss = random.getstate()
    numpy_state = np.random.get_state()
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        tensors |= {f"cuda.{index}": state for index, state in enumerate(torch.cuda.get_rng_state_all())}
    return (
        {"python": [python_version, list(python_state), python_gauss],
         "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]},
        tensors,
    )


def restore_rng(states: dict, tensors: dict[str, torch.Tensor]) -> None:
    version, python_state, gauss = states["python"]
    random.setstate((version, tuple(python_state), gauss))
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda_states = [tensors[f"cuda.{index}"] for index in range(sum(name.startswith("cuda.") for name in tensors))]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def has_checkpoint(run: Path) -> bool:
    """Whether the run folder holds a complete checkpoint to resume from."""
    return bool(_checkpoints(Path(run) / CHECKPOINTS))


def remove_checkpoints(run: Path) -> None:
    shutil.rmtree(Path(run) / CHECKPOINTS, ignore_errors=True)


def _checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoint folders, newest first (temporary folders start with '.')."""
    if not folder.is_dir():
        return []
    return sorted((path for path in folder.iterdir() if path.name.startswith(_PREFIX)), reverse=True)


def _read_verified(checkpoint: Path) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    try:
        document = parse_json((checkpoint / "state.json").read_text(encoding="utf-8"))
        for name, digest in document["files"].items():
            if file_sha256(checkpoint / name) != digest:
                raise CorruptCheckpoint(f"{name} does not match its recorded hash")
        tensors = {name.removesuffix(".safetensors"): load_file(checkpoint / name) for name in _TENSOR_FILES}
    except CorruptCheckpoint:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CorruptCheckpoint(f"{type(error).__name__}: {error}") from None
    return document, tensors


def _split_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors for safetensors (`state.<param index>.<name>`), everything else for JSON."""
    tensors, values = {}, {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.contiguous()
            else:
                values.setdefault(str(index), {})[name] = value
    return tensors, {"values": values, "param_groups": state_dict["param_groups"]}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], document: dict) -> dict:
    state: dict[int, dict] = {int(index): dict(entries) for index, entries in document["values"].items()}
    for key, tensor in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    return {"state": state, "param_groups": document["param_groups"]}


