"""Feature-imitation losses: FitNets and Attention Transfer.

Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015);
Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from segkd.losses.functional.common import check_rank, check_same_shape, resize_to

ATReduction = Literal["mean_squared", "paper"]


def fitnet_loss(student_adapted: Tensor, teacher: Tensor) -> Tensor:
    """FitNets hint loss ``mean_{n,c,h,w} (r(s) - t)^2``.

    Args:
        student_adapted: (N, C_t, h_s, w_s), the student feature after the regressor r (a 1x1 conv
            owned by the ``fitnet`` module); bilinearly resized to the teacher's size when it differs.
        teacher: (N, C_t, h, w).
    """
    check_rank(student_adapted, 4, "fitnet_loss student")
    student = resize_to(student_adapted, tuple(teacher.shape[-2:]))
    check_same_shape(student, teacher, "fitnet_loss (channels must match; adapt the student first)")
    return F.mse_loss(student, teacher)


def attention_map(feat: Tensor, p: float = 2.0, size: tuple[int, int] | None = None) -> Tensor:
    """Spatial attention ``Q = vec(sum_c |f_c|^p) / ||vec(sum_c |f_c|^p)||_2``: (N, C, H, W) -> (N, H*W).

    The channel *mean* of the AT code equals the sum up to a factor removed by the normalisation. With
    ``size`` the unnormalised map is bilinearly resized first (for maps of different resolution).
    """
    check_rank(feat, 4, "attention_map feat")
    am = feat.abs().pow(p).mean(dim=1, keepdim=True)
    if size is not None:
        am = resize_to(am, size)
    return F.normalize(am.flatten(1), dim=1)


def attention_transfer_loss(student: Tensor, teacher: Tensor, p: float = 2.0,
                            reduction: ATReduction = "mean_squared") -> Tensor:
    """Attention transfer between one student and one teacher map (channels may differ).

    ``"mean_squared"`` (AT code ``at_loss``, default): ``mean_{n,j} (Q_s - Q_t)^2``.
    ``"paper"``: ``mean_n ||Q_s - Q_t||_2`` (the paper's p-norm with p=2; beta/2 goes in the weight).

    Args:
        student: (N, C_s, h_s, w_s); its map is resized to the teacher's (h, w) when sizes differ.
        teacher: (N, C_t, h, w).
        p: exponent of the attention map (2 in the paper).
    """
    size = tuple(teacher.shape[-2:])
    diff = attention_map(student, p, size) - attention_map(teacher, p)
    if reduction == "mean_squared":
        return diff.pow(2).mean()
    if reduction == "paper":
        return diff.norm(dim=1).mean()
    raise ValueError(f"attention_transfer_loss: unknown reduction '{reduction}' "
                     "(use 'mean_squared' or 'paper')")
