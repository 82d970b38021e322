"""Double Similarity Distillation (Feng et al., "Double Similarity Distillation for Semantic Image
Segmentation", IEEE TIP 2021), as re-implemented in CIRKD's code (``losses/dsd.py``,
``CriterionDoubleSimKD``).

Two terms:

- pixel-wise similarity (PSD): spatial attention maps of several layers and their pairwise residuals;
- category-wise similarity (CSD): class-to-class similarity of the pooled, position-softmaxed logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from segkd.losses.functional.common import check_rank, check_same_shape

__all__ = ["attention_vectors", "category_similarity_loss", "pixel_similarity_loss"]


def attention_vectors(feats: list[Tensor], p: int = 2) -> list[Tensor]:
    """Per map (N, C_i, H, W): ``normalize(mean_c f^p)`` over the H*W positions -> (N, H*W)."""
    return [F.normalize(f.pow(p).mean(dim=1).flatten(1), p=2, dim=1) for f in feats]


def _residuals(att: list[Tensor]) -> list[Tensor]:
    """``normalize(a_m - a_n)`` for every pair n < m, in CIRKD's order (n outer, m inner)."""
    return [F.normalize(att[m] - att[n], p=2, dim=1) for n in range(len(att) - 1)
            for m in range(n + 1, len(att))]


def pixel_similarity_loss(student: list[Tensor], teacher: list[Tensor]) -> Tensor:
    """PSD: with a_i the attention vector of map i (:func:`attention_vectors`) and
    r_nm = normalize(a_m - a_n) for the K = L(L-1)/2 pairs n < m of the L maps::

        L_psd = 1/K sum_{n<m} mean_{samples, positions} (normalize(r^s_nm) - normalize(r^t_nm))^2

    (the second normalisation is CIRKD's, idempotent). ``student`` and ``teacher``: lists of L >= 2
    (N, C_i, H, W) maps, all of one spatial size; channel counts may differ (attention averages them).
    """
    if len(student) != len(teacher) or len(student) < 2:
        raise ValueError(f"pixel_similarity_loss: need two lists of >= 2 maps of equal length, got "
                         f"{len(student)} and {len(teacher)}")
    for s, t in zip(student, teacher, strict=True):
        check_rank(s, 4, "pixel_similarity_loss student map")
        if s.shape[0] != t.shape[0] or s.shape[-2:] != t.shape[-2:]:
            raise ValueError(f"pixel_similarity_loss: maps {tuple(s.shape)} and {tuple(t.shape)} differ in "
                             "batch or spatial size")
    rs, rt = _residuals(attention_vectors(student)), _residuals(attention_vectors(teacher))
    total = sum((F.normalize(a, p=2, dim=1) - F.normalize(b, p=2, dim=1)).pow(2).mean()
                for a, b in zip(rs, rt, strict=True))
    return total / len(rs)


def category_similarity_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float = 4.0) -> Tensor:
    """CSD on logits (N, K, H, W): 2x2 average pooling (stride 2, ceil mode), then per class a softmax over
    the positions at temperature tau, p_k = softmax(z_k / tau); S = P P^T (K x K per sample)::

        L_csd = mean_{n, k, l} (S^s_nkl - S^t_nkl)^2
    """
    check_rank(student_logits, 4, "category_similarity_loss student_logits")
    check_same_shape(student_logits, teacher_logits, "category_similarity_loss")
    if tau <= 0:
        raise ValueError(f"category_similarity_loss: tau must be > 0, got {tau}")

    def similarity(z: Tensor) -> Tensor:
        z = F.avg_pool2d(z, kernel_size=2, stride=2, padding=0, ceil_mode=True)
        p = F.softmax(z.flatten(2) / tau, dim=-1)  # (N, K, P)
        return torch.bmm(p, p.transpose(1, 2))

    return (similarity(student_logits) - similarity(teacher_logits)).pow(2).mean()
