"""`--freeze progressive`: freeze the bottom blocks during training once they stop changing.

After AutoFreeze (Liu et al., 2021, arXiv 2102.01386): training starts with every layer trainable;
the gradient norm of each block is summed over an interval of steps, and at the end of each
interval the bottom blocks whose sum changed by less than a threshold (relative to the interval
before) are frozen, from the bottom up to the first block that still changes, with the
embeddings. A frozen block never trains again; the top block always trains (K <= L - 1, as Telly-K).
"""

from __future__ import annotations

import torch
from torch import nn


def block_gradient_norms(blocks: list[nn.Module]) -> list[float]:
    """The L2 norm of each block's current gradients (0 for a block without any)."""
    norms = []
    for block in blocks:
        grads = [p.grad.detach().float().norm() for p in block.parameters() if p.grad is not None]
        norms.append(float(torch.stack(grads).norm()) if grads else 0.0)
    return norms


def blocks_to_freeze(k: int, previous: list[float], current: list[float], threshold: float) -> int:
    """The new K of a run frozen at K, from each block's gradient norm summed over the interval
    before and over the last: the bottom trainable blocks whose sum changed by less than
    `threshold` of the earlier one join the frozen ones, stopping at the first that changed more;
    the top block stays trainable. K itself when no block joins."""
    num_layers = len(current)
    new_k = max(k, 0)
    while new_k < num_layers - 1 and previous[new_k] > 0 \
            and abs(current[new_k] - previous[new_k]) / previous[new_k] < threshold:
        new_k += 1
    return new_k if new_k > max(k, 0) else k

