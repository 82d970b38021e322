"""Pixel-wise knowledge distillation on class logits.

Hinton et al., "Distilling the Knowledge in a Neural Network" (2015), applied per pixel as in
Liu et al., "Structured Knowledge Distillation for Semantic Segmentation" (CVPR 2019) and
Yang et al., "Cross-Image Relational KD" (CVPR 2022).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from segkd.labels import IGNORE_INDEX
from segkd.losses.functional.common import align_to_larger, check_rank, downsample_labels

KDReduction = Literal["mean", "skd"]


def pixel_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    reduction: KDReduction = "mean",
    labels: Tensor | None = None,
    num_classes: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Pixel-wise KD between student and teacher class scores.

    ``reduction="mean"`` (CIRKD ``losses/kd.py``, the default; produced the CIRKD table)::

        L = T^2 / |P| * sum_{p in P} KL( softmax(z_t[p] / T) || softmax(z_s[p] / T) )

    ``reduction="skd"`` (official SKD ``CriterionPixelWise``; no temperature in its runs)::

        L = 1 / (h * w) * sum_{n, p} CE( softmax(z_t[n, p] / T), softmax(z_s[n, p] / T) ) * T^2

    i.e. a *sum* over the batch of the cross-entropy to the teacher (= KL + teacher entropy, same gradient)
    divided by the per-image pixel count h*w; it is not zero when student equals teacher.

    Args:
        student_logits: (N, K, h_s, w_s).
        teacher_logits: (N, K, h_t, w_t); when sizes differ the smaller map is bilinearly upsampled to
            the larger one.
        temperature: T (> 0).
        reduction: ``"mean"`` or ``"skd"`` (see above).
        labels: optional (N, H, W) ground truth; when given, pixels whose nearest-downsampled label is
            ``ignore_index`` (or not a class id) are masked out. The reference code does not mask.
            With ``"mean"`` the mean runs over valid pixels; with ``"skd"`` the sum does.
        num_classes: classes for the validity check of ``labels`` (default: K).
        ignore_index: label value of unlabelled pixels.

    Returns:
        A scalar tensor.
    """
    check_rank(student_logits, 4, "pixel_kd_loss student_logits")
    check_rank(teacher_logits, 4, "pixel_kd_loss teacher_logits")
    if temperature <= 0:
        raise ValueError(f"pixel_kd_loss: temperature must be > 0, got {temperature}")
    s, t = align_to_larger(student_logits, teacher_logits)
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"pixel_kd_loss: student has {s.shape[1]} classes, teacher {t.shape[1]}")
    log_p_s = F.log_softmax(s / temperature, dim=1)
    log_p_t = F.log_softmax(t / temperature, dim=1)
    p_t = log_p_t.exp()
    if reduction == "mean":
        per_pixel = (p_t * (log_p_t - log_p_s)).sum(dim=1)  # (N, h, w) KL(t || s)
    elif reduction == "skd":
        per_pixel = -(p_t * log_p_s).sum(dim=1)  # (N, h, w) CE(t, s)
    else:
        raise ValueError(f"pixel_kd_loss: unknown reduction '{reduction}' (use 'mean' or 'skd')")
    mask = _pixel_mask(labels, per_pixel.shape[-2:], num_classes or s.shape[1], ignore_index)
    if mask is not None:
        mask = mask.to(per_pixel.dtype)
    scale = temperature**2
    h, w = per_pixel.shape[-2:]
    if reduction == "mean":
        if mask is None:
            return per_pixel.mean() * scale
        return (per_pixel * mask).sum() / mask.sum().clamp_min(1) * scale
    total = per_pixel.sum() if mask is None else (per_pixel * mask).sum()
    return total / (h * w) * scale


def _pixel_mask(labels: Tensor | None, size: torch.Size, num_classes: int,
                ignore_index: int) -> Tensor | None:
    """Boolean (N, h, w) mask of labelled pixels, or None when no labels are given."""
    if labels is None:
        return None
    small = downsample_labels(labels, tuple(size))
    return (small != ignore_index) & (small >= 0) & (small < num_classes)
