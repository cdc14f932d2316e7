"""Where models run and in what precision: chosen once per command, used by the loop, tasks and study.

`resolve_runtime("auto", "bf16")` checks what the user asked for against the machine and returns
a `Runtime`. Everything that runs a model goes through it:
- `place(module)` puts a model on the device;
- `move(batch)` puts a batch (tensors in dicts, lists, tuples) on the device. It is the one place
  that moves data: tasks build CPU tensors and never call `.to` or `.cuda`;
- `infer(compute, batches)` runs `compute` over batches on the device (moved, under autocast, with
  a progress bar) and brings the results back to the CPU;
- `autocast()` and `grad_scaler()` are mixed precision: bf16 autocast, or fp16 autocast with loss
  scaling (fp16 needs a GPU, as in Accelerate);
- `peak_memory_mb()` is the device's allocation high-water mark (CUDA), next to the process's RSS.

`--device auto` is the accelerator Accelerate would pick (CUDA, MPS, ...), else the CPU. Under
`accelerate launch --multi_gpu` each process gets its own GPU (`cuda:<local rank>`).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from accelerate.utils import send_to_device
from tqdm.auto import tqdm

from telly.config import PRECISIONS
from telly.errors import UserError, raise_if_interrupted

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str = "no"

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.device)

    def move(self, batch):
        """`batch` with every tensor in it on the device (a no-op for tensors already there)."""
        return send_to_device(batch, self.device)

    def autocast(self):
        if self.precision == "no":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST_DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16 (gradients would underflow); a disabled scaler, a no-op, otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    @torch.no_grad()
    def infer(self, compute: Callable, batches: Iterable, description: str) -> list:
        """`compute(batch)` for each batch, on the device; the results, back on the CPU, in order."""
        results = []
        for batch in tqdm(list(batches), desc=description, leave=False, disable=None):
            raise_if_interrupted()
            with self.autocast():
                results.append(send_to_device(compute(self.move(batch)), "cpu"))
        return results

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return _cpu_model() or platform.processor() or platform.machine() or self.device.type

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_mb(self) -> float | None:
        """The most device memory tensors took since `reset_peak_memory` (None off CUDA)."""
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20

    def to_dict(self) -> dict:
        return {"device": str(self.device), "device_name": self.device_name, "precision": self.precision}


CPU = Runtime(torch.device("cpu"))


def _cpu_model() -> str | None:
    """The processor's model name as Linux reports it ("AMD EPYC 9R14"), else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None)
    except OSError:
        return None


def start_processes(device: str = "auto"):
    """Accelerate's view of the processes of this run (one, or those of `accelerate launch`).

    Without CUDA its process group must be asked for on the CPU: otherwise Accelerate sees one
    process in each of the launched ones.
    """
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def resolve_runtime(device: str = "auto", precision: str = "no", processes=None) -> Runtime:
    """The device and precision asked for, checked against this machine (UserError if it cannot).

    `processes` (from `start_processes`) are those of a multi-process launch: "auto" and "cuda"
    then mean this process's own GPU.
    """
    if precision not in PRECISIONS:
        raise UserError(f"--mixed-precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    chosen = _device(device, processes)
    _check_precision(chosen, precision)
    return Runtime(chosen, precision)


def _device(name: str, processes) -> torch.device:
    multi_process = processes is not None and processes.num_processes > 1
    if name == "auto":
        return processes.device if multi_process else (processes or start_processes()).default_device
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device must be {DEVICE_CHOICES}, got {name!r}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available here (torch {torch.__version__}); "
                            "use --device cpu or auto")
        if multi_process:
            if device.index is not None:
                raise UserError(f"--device {name} names one GPU, but each process of accelerate launch takes its "
                                "own; use --device cuda or auto")
            return processes.device
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                            f"numbered from 0")
        return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"--device {name}: MPS (Apple GPU) is not available here; use --device cpu or auto")
        return device
    raise UserError(f"--device must be {DEVICE_CHOICES}, got {name!r}")


def _check_precision(device: torch.device, precision: str) -> None:
    if precision == "fp16" and device.type == "cpu":
        raise UserError("--mixed-precision fp16 needs a GPU (loss-scaled fp16 is a GPU format); "
                        "on the CPU use --mixed-precision bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--mixed-precision bf16: {torch.cuda.get_device_name(device)} cannot compute in bf16; "
                        "use --mixed-precision fp16")
