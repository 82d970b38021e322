"""Intra-class Feature Variation Distillation.

Wang et al., "Intra-class Feature Variation Distillation for Semantic Segmentation" (ECCV 2020).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from segkd.losses.functional.common import check_rank, downsample_labels, resize_to, valid_mask

IFVReduction = Literal["all", "valid"]


def ifv_map(feat: Tensor, labels: Tensor, num_classes: int, eps: float = 1e-6) -> Tensor:
    """Intra-class feature variation map: cosine similarity of each pixel to its class prototype.

    For image n and class k with pixel set P_nk (labels at feature resolution)::

        proto_nk = sum_{p in P_nk} f_np / (|P_nk| + eps)          (per image, as the reference code)
        IFV_np   = cos(f_np, proto_{n, y_np})

    Pixels without a class id (ignore) keep their own feature as "prototype", so IFV = 1 there.

    Args:
        feat: (N, C, h, w) features.
        labels: (N, h, w) class ids at feature resolution.
        num_classes: K; labels outside ``[0, K)`` count as ignored.

    Returns:
        (N, h, w) map.
    """
    valid = valid_mask(labels, num_classes)
    onehot = F.one_hot(labels.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2)
    onehot = onehot.to(feat.dtype) * valid[:, None].to(feat.dtype)  # (N, K, h, w)
    sums = torch.einsum("nkhw,nchw->nkc", onehot, feat)
    protos = sums / (onehot.sum(dim=(2, 3))[..., None] + eps)  # (N, K, C)
    centre = torch.einsum("nkhw,nkc->nchw", onehot, protos)
    centre = centre + feat * (~valid)[:, None].to(feat.dtype)
    return F.cosine_similarity(feat, centre, dim=1, eps=1e-8)


def ifvd_loss(
    student_feat: Tensor,
    teacher_feat: Tensor,
    labels: Tensor,
    num_classes: int,
    reduction: IFVReduction = "all",
) -> Tensor:
    """IFVD loss: ``MSE(IFV_s, IFV_t)``.

    ``reduction="all"`` (CIRKD and official IFVD code, default): mean over all N*h*w pixels; ignored
    pixels have IFV = 1 in both networks, so they add 0 but count in the denominator.
    ``reduction="valid"``: mean over labelled pixels only (0 when there are none).

    Args:
        student_feat: (N, C_s, h_s, w_s); bilinearly resized to the teacher's size when it differs.
        teacher_feat: (N, C_t, h, w); channel counts may differ (each network uses its own prototypes).
        labels: (N, H, W) ground truth, nearest-downsampled to (h, w).
        num_classes: K.
        reduction: ``"all"`` or ``"valid"``.

    Returns:
        A scalar tensor.
    """
    check_rank(student_feat, 4, "ifvd_loss student_feat")
    check_rank(teacher_feat, 4, "ifvd_loss teacher_feat")
    size = tuple(teacher_feat.shape[-2:])
    small = downsample_labels(labels, size)
    student = resize_to(student_feat, size)
    sq = (ifv_map(student, small, num_classes) - ifv_map(teacher_feat, small, num_classes)).pow(2)
    if reduction == "all":
        return sq.mean()
    if reduction == "valid":
        mask = valid_mask(small, num_classes).to(sq.dtype)
        return (sq * mask).sum() / mask.sum().clamp_min(1)
    raise ValueError(f"ifvd_loss: unknown reduction '{reduction}' (use 'all' or 'valid')")
