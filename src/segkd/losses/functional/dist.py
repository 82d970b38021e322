"""DIST: distillation by Pearson correlation of class probabilities.

Huang et al., "Knowledge Distillation from A Stronger Teacher" (NeurIPS 2022).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from segkd.losses.functional.common import align_to_larger, check_rank


def pearson_correlation(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Row-wise Pearson correlation of two (R, D) matrices -> (R,) (cosine of centred rows, eps-guarded)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(student_logits: Tensor, teacher_logits: Tensor, beta: float = 1.0, gamma: float = 1.0,
              tau: float = 1.0) -> Tensor:
    """DIST on dense logits, pixels flattened into a (P, K) matrix with P = N*h*w (as the DIST code does)::

        Y = softmax(Z / tau) per pixel
        inter = 1 - mean_p  rho(Y_s[p, :], Y_t[p, :])     (relation between classes, per pixel)
        intra = 1 - mean_k  rho(Y_s[:, k], Y_t[:, k])     (relation between pixels, per class)
        L = tau^2 * (beta * inter + gamma * intra)

    The paper writes tau^2 on the inter term; the authors' code (``dist_kd.py``, also mmrazor) multiplies
    both terms by tau^2, which is what this does. Irrelevant at the default tau = 1.

    Args:
        student_logits: (N, K, h_s, w_s); logits of different size are aligned by bilinear upsampling to
            the larger map.
        teacher_logits: (N, K, h_t, w_t).
    """
    check_rank(student_logits, 4, "dist_loss student_logits")
    check_rank(teacher_logits, 4, "dist_loss teacher_logits")
    s, t = align_to_larger(student_logits, teacher_logits)
    k = s.shape[1]
    y_s = F.softmax(s / tau, dim=1).permute(0, 2, 3, 1).reshape(-1, k)
    y_t = F.softmax(t / tau, dim=1).permute(0, 2, 3, 1).reshape(-1, k)
    inter = 1 - pearson_correlation(y_s, y_t).mean()
    intra = 1 - pearson_correlation(y_s.t(), y_t.t()).mean()
    return tau**2 * (beta * inter + gamma * intra)
