"""Learning-rate schedule: linear warm-up then poly decay over the run's budget.

    poly(i) = (1 - p(i)) ** power                                    (power 0.9)
    decay(i) = floor + (1 - floor) * poly(i)                         (floor = min_lr / lr; 0: plain poly)
    lr(i)   = base * decay(i) * (ratio + (1 - ratio) * i / warmup)   for i < warmup (linear warm-up)
    lr(i)   = base * decay(i)                                        afterwards

(DIST's segmentation training: ``1e-4 + (lr - 1e-4) * poly``, i.e. floor = 1e-4 / lr),
where ``p(i) = i / max_iters`` for an iteration budget and, for a time budget (seconds or student-step
equivalents, :mod:`segkd.engine.budget`), the fraction of the budget spent when the LR is set.

Built on ``torch.optim.lr_scheduler.LambdaLR`` so its state dict goes into checkpoints unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def poly_factor(
    iteration: int,
    max_iters: int,
    power: float = 0.9,
    warmup_iters: int = 0,
    warmup_ratio: float = 0.1,
    floor: float = 0.0,
) -> float:
    """Multiplier of the base LR at ``iteration`` (0-based) of ``max_iters``: :func:`progress_factor` at
    progress ``iteration / max_iters``."""
    it = min(iteration, max_iters)
    return progress_factor(it, it / max_iters, power, warmup_iters, warmup_ratio, floor)


def progress_factor(
    iteration: int,
    progress: float,
    power: float = 0.9,
    warmup_iters: int = 0,
    warmup_ratio: float = 0.1,
    floor: float = 0.0,
) -> float:
    """Multiplier of the base LR when a fraction ``progress`` of a time budget is spent."""
    poly = floor + (1.0 - floor) * (1.0 - min(max(progress, 0.0), 1.0)) ** power
    if warmup_iters > 0 and iteration < warmup_iters:
        return poly * (warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iters)
    return poly


def build_poly_scheduler(
    optimizer: Optimizer,
    max_iters: int,
    power: float = 0.9,
    warmup_iters: int = 0,
    warmup_ratio: float = 0.1,
    progress: Callable[[], float] | None = None,
    floor: float = 0.0,
) -> LambdaLR:
    """A ``LambdaLR`` stepping once per optimizer step: :func:`poly_factor` over ``max_iters``, or, given
    ``progress`` (the spent fraction of a time budget), :func:`progress_factor`; ``floor``: the LR the
    decay ends at, as a fraction of each group's base LR (``optim.min_lr / optim.lr``)."""
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"optim.min_lr must be >= 0 and below optim.lr (floor {floor})")
    if progress is not None:
        return LambdaLR(
            optimizer, lambda i: progress_factor(i, progress(), power, warmup_iters, warmup_ratio, floor)
        )
    if max_iters <= 0:
        raise ValueError(f"train.iters must be positive, got {max_iters}")
    return LambdaLR(optimizer, lambda i: poly_factor(i, max_iters, power, warmup_iters, warmup_ratio, floor))
