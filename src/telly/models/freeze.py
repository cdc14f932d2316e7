"""Telly-K as one call: freeze the embeddings and the bottom K transformer blocks.

Frozen means: no gradients, and inference mode. A frozen module stays in eval mode through
`model.train()`, so its dropout is off while the rest of the model trains: it computes what its
activation cache stores (computed once, in eval mode), whether or not the cache is used. The
paper's code only sets `requires_grad=False`, leaving dropout on in the frozen layers.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

from torch import nn

from telly.config import FULL_FINETUNING
from telly.errors import UserError
from telly.models.layers import find_backbone


@dataclass(frozen=True)
class ParamReport:
    """How many parameters a model has and how many of them will be trained."""

    total: int
    trainable: int
    #: Optional breakdown, e.g. {"encoder": (total, trainable), "decoder": ..., "head": ...}.
    components: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def frozen(self) -> int:
        return self.total - self.trainable

    @property
    def percent_trainable(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "percent_trainable": round(self.percent_trainable, 4),
            "components": {name: {"total": t, "trainable": n} for name, (t, n) in self.components.items()},
        }

    def __str__(self) -> str:
        text = (
            f"parameters: {self.total:,} total, {self.trainable:,} trainable "
            f"({self.percent_trainable:.1f}%), {self.frozen:,} frozen"
        )
        parts = [f"{name} {trainable:,}/{total:,}" for name, (total, trainable) in self.components.items()]
        return text + (f" [trainable/total: {', '.join(parts)}]" if parts else "")


def param_report(model: nn.Module, components: dict[str, nn.Module] | None = None) -> ParamReport:
    """Count unique parameters (tied weights count once, in the first component that holds them)."""
    counted: set[int] = set()

    def count(module: nn.Module) -> tuple[int, int]:
        fresh = [p for p in module.parameters() if id(p) not in counted]
        counted.update(id(p) for p in fresh)
        return sum(p.numel() for p in fresh), sum(p.numel() for p in fresh if p.requires_grad)

    breakdown = {name: count(module) for name, module in (components or {}).items()}
    rest = count(model)
    if breakdown and rest[0]:
        breakdown["other"] = rest  # parameters outside the named parts, so the parts add up
    parts = list(breakdown.values()) if breakdown else [rest]
    return ParamReport(
        total=sum(total for total, _ in parts),
        trainable=sum(trainable for _, trainable in parts),
        components=breakdown,
    )


def validate_k(k: int, num_layers: int) -> None:
    if not FULL_FINETUNING <= k <= num_layers - 1:
        raise UserError(
            f"K={k} is out of range for a model with {num_layers} layers: use -1 (full fine-tuning), "
            f"0 (embeddings only) up to {num_layers - 1}"
        )


def freeze(model: nn.Module, k: int, *, freeze_decoder: bool = False) -> ParamReport:
    """Freeze the embeddings and the bottom `k` blocks of `model` in place; return the report.

    K=-1 trains everything, K=0 freezes only the embeddings, K=n also freezes blocks 0..n-1. The
    top block always stays trainable, so K ranges over -1..L-1. Everything else (the other blocks,
    final norms, pooler, decoder, task heads) is left trainable, except a pre-trained decoder
    (T5's) when `freeze_decoder` is set. Weights tied to the embeddings (an LM head) freeze with them.
    """
    backbone = find_backbone(model)
    validate_k(k, backbone.num_layers)
    if freeze_decoder and backbone.decoder is None:
        raise UserError(
            f"--freeze-decoder: this {backbone.family} model has no pre-trained decoder "
            "(a newly initialised decoder must be trained)"
        )
    for module in model.modules():
        module.__dict__.pop("train", None)  # a module frozen by an earlier call trains again
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    frozen = [*backbone.embeddings, *backbone.blocks[:k]] if k != FULL_FINETUNING else []
    if freeze_decoder:
        frozen.append(backbone.decoder)
    for module in frozen:
        module.requires_grad_(False)
        # An instance attribute shadows nn.Module.train, which a parent's train() calls on its children.
        module.train = types.MethodType(_stay_in_eval, module)
        module.eval()
    return param_report(model)


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    """`train()` of a frozen module: it and everything inside it stay in eval mode."""
    return nn.Module.train(module, False)
