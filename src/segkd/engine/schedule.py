"""Iteration-based learning-rate schedule: linear warm-up then poly decay.

    poly(i) = (1 - i / max_iters) ** power                          (power 0.9)
    lr(i)   = base * poly(i) * (ratio + (1 - ratio) * i / warmup)    for i < warmup (linear warm-up)
    lr(i)   = base * poly(i)                                         afterwards

Built on ``torch.optim.lr_scheduler.LambdaLR`` so its state dict goes into checkpoints unchanged.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def poly_factor(
    iteration: int, max_iters: int, power: float = 0.9, warmup_iters: int = 0, warmup_ratio: float = 0.1
) -> float:
    """Multiplier of the base LR at ``iteration`` (0-based) of ``max_iters``."""
    it = min(iteration, max_iters)
    poly = (1.0 - it / max_iters) ** power
    if warmup_iters > 0 and it < warmup_iters:
        return poly * (warmup_ratio + (1.0 - warmup_ratio) * it / warmup_iters)
    return poly


def build_poly_scheduler(
    optimizer: Optimizer, max_iters: int, power: float = 0.9, warmup_iters: int = 0, warmup_ratio: float = 0.1
) -> LambdaLR:
    """A ``LambdaLR`` stepping once per optimizer step with :func:`poly_factor`."""
    if max_iters <= 0:
        raise ValueError(f"train.iters must be positive, got {max_iters}")
    return LambdaLR(optimizer, lambda i: poly_factor(i, max_iters, power, warmup_iters, warmup_ratio))
