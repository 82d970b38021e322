"""Seeding and determinism switches: same config + seed gives the same result on CPU."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); optionally force deterministic kernels.

    ``deterministic`` sets ``torch.use_deterministic_algorithms(True, warn_only=True)`` and disables the
    cuDNN autotuner; otherwise the autotuner is enabled for speed on GPU.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
