"""Telly-K as one call: freeze the embeddings and the bottom K transformer blocks."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from telly.errors import UserError
from telly.models.layers import find_backbone

FULL_FINETUNING = -1


@dataclass(frozen=True)
class ParamReport:
    """How many parameters a model has and how many of them will be trained."""

    total: int
    trainable: int

    @property
    def frozen(self) -> int:
        return self.total - self.trainable

    @property
    def percent_trainable(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "frozen": self.frozen, "percent_trainable": round(self.percent_trainable, 4)}

    def __str__(self) -> str:
        return (
            f"parameters: {self.total:,} total, {self.trainable:,} trainable "
            f"({self.percent_trainable:.1f}%), {self.frozen:,} frozen"
        )


def param_report(model: nn.Module) -> ParamReport:
    """Count unique parameters (tied weights count once)."""
    unique = {id(p): p for p in model.parameters()}.values()
    return ParamReport(
        total=sum(p.numel() for p in unique),
        trainable=sum(p.numel() for p in unique if p.requires_grad),
    )


def validate_k(k: int, num_layers: int) -> None:
    if not FULL_FINETUNING <= k <= num_layers - 1:
        raise UserError(
            f"K={k} is out of range for a model with {num_layers} layers: use -1 (full fine-tuning), "
            f"0 (embeddings only) up to {num_layers - 1}"
        )


def freeze(model: nn.Module, k: int) -> ParamReport:
    """Freeze the embeddings and the bottom `k` blocks of `model` in place; return the report.

    K=-1 trains everything, K=0 freezes only the embeddings, K=n also freezes blocks 0..n-1. The
    top block always stays trainable, so K ranges over -1..L-1. Everything else (the other blocks,
    final norms, pooler, decoder, task heads) is left trainable.
    """
    backbone = find_backbone(model)
    validate_k(k, backbone.num_layers)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if k >= 0:
        for module in (*backbone.embeddings, *backbone.blocks[:k]):
            module.requires_grad_(False)
    return param_report(model)
