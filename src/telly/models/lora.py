"""The LoRA baseline through PEFT: low-rank adapters on the attention projections, everything
pre-trained frozen, new task parts (heads, a new decoder) trained."""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from telly.models.freeze import ParamReport, param_report
from telly.models.layers import find_backbone


def apply_lora(
    model: nn.Module, pretrained: nn.Module, rank: int = 8, alpha: int = 16, targets: tuple[str, ...] = ()
) -> ParamReport:
    """Add LoRA adapters to `pretrained` (inside the task `model`) and train only them and the new parts.

    `targets` are module names to adapt; by default the attention projections the family's row names
    (BERT/RoBERTa: query, value; MPNet and T5: q, v; GPT-2: c_attn; the Llama family: q_proj, v_proj).
    """
    targets = tuple(targets) or find_backbone(pretrained).layout.lora_targets
    pretrained_parameters = {id(p) for p in pretrained.parameters()}
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets)), pretrained)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(id(parameter) not in pretrained_parameters)
    return param_report(model)
