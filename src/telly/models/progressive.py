"""`--freeze progressive`: freeze the bottom blocks during training once they stop changing.

After AutoFreeze (Liu et al., 2021, arXiv 2102.01386): training starts with every layer trainable;
the gradient norm of each block is summed over an interval of steps, and at the end of each
interval each trainable block's rate of change (of that sum, relative to the interval before) is
ranked against the other trainable blocks': the bottom blocks whose rate is at most a percentile
of the rates (AutoFreeze's median by default) are frozen, from the bottom up to the first block
above it, with the embeddings. The rule is relative, so it freezes a part of what still trains
at each step, whatever the scale of the gradients. A frozen block never trains again; the top
block always trains (K <= L - 1, as Telly-K).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def block_gradient_norms(blocks: list[nn.Module]) -> list[float]:
    """The L2 norm of each block's current gradients (0 for a block without any)."""
    norms = []
    for block in blocks:
        grads = [p.grad.detach().float().norm() for p in block.parameters() if p.grad is not None]
        norms.append(float(torch.stack(grads).norm()) if grads else 0.0)
    return norms


def change_rates(previous: list[float], current: list[float]) -> list[float]:
    """Each block's |current - previous| / previous; infinite for a block without gradients before."""
    return [abs(now - before) / before if before > 0 else math.inf for before, now in zip(previous, current)]


def blocks_to_freeze(k: int, previous: list[float], current: list[float], percentile: float) -> int:
    """The new K of a run frozen at K, from each block's gradient norm summed over the interval
    before and over the last: the bottom trainable blocks whose rate of change is at most the
    `percentile`-th percentile of the trainable blocks' rates join the frozen ones, stopping at the
    first above it (or without a rate); the top block stays trainable. K itself when none joins."""
    first = max(k, 0)
    rates = change_rates(previous[first:], current[first:])
    defined = [rate for rate in rates if math.isfinite(rate)]
    if not defined:
        return k
    cutoff = float(np.percentile(defined, percentile))
    joining = 0
    while first + joining < len(current) - 1 and rates[joining] <= cutoff:
        joining += 1
    return first + joining if joining else k

