"""The task loss every run trains with: cross-entropy of the upsampled logits (teachers, baselines and
distilled students alike)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from segkd.labels import IGNORE_INDEX


def upsampled_ce(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Cross-entropy of (N, K, h, w) logits bilinearly upsampled to the (N, H, W) labels.

    The mean over labelled pixels, ``sum_p CE_p / max(#labelled, 1)``: the same value as PyTorch's mean
    reduction when any pixel is labelled, and 0 (with a zero gradient) instead of 0/0 = NaN for a batch
    whose labels are all ``ignore_index`` (a crop of an unlabelled region).
    """
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp16/bf16 -> fp32, fp64 kept
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    return total / (labels != ignore_index).sum().clamp(min=1)
