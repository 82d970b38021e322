"""Structured Knowledge Distillation: pair-wise and holistic (adversarial) terms.

Liu et al., "Structured Knowledge Distillation for Semantic Segmentation" (CVPR 2019; TPAMI 2020).
The pixel-wise term is :func:`segkd.losses.functional.kd.pixel_kd_loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from segkd.losses.blocked import AffinityMethod, affinity_sq_error_sum
from segkd.losses.functional.common import check_rank, resize_to

PairPool = Literal["cirkd", "skd", "none"]
AdvLoss = Literal["hinge", "wgan-gp"]


def skd_pool(feat: Tensor, pool: PairPool = "cirkd", scale: float = 0.5,
             reference_size: tuple[int, int] | None = None) -> Tensor:
    """Spatial max pooling that turns pixels into the pair-wise "nodes".

    - ``"cirkd"``: 2x2 max pool, stride 2, ``ceil_mode=True`` (CIRKD's re-implementation, its table).
    - ``"skd"``: official SKD, kernel = stride = (int(scale*H), int(scale*W)) of ``reference_size``
      (the teacher map; default ``feat``'s own size), ``ceil_mode=True``: a 65x65 map becomes 3x3 nodes.
    - ``"none"``: every pixel is a node.
    """
    h, w = reference_size or tuple(feat.shape[-2:])
    if pool == "none":
        return feat
    if pool == "cirkd":
        return F.max_pool2d(feat, kernel_size=2, stride=2, ceil_mode=True)
    if pool == "skd":
        kernel = (max(1, int(scale * h)), max(1, int(scale * w)))
        return F.max_pool2d(feat, kernel_size=kernel, stride=kernel, ceil_mode=True)
    raise ValueError(f"skd_pool: unknown pool '{pool}' (use 'cirkd', 'skd' or 'none')")


def l2_normalize_channels(feat: Tensor, detach_norm: bool = True, eps: float = 1e-8) -> Tensor:
    """``f / (||f||_2 + eps)`` over channels per pixel; (N, C, H, W) -> same shape.

    ``detach_norm=True`` treats the norm as a constant in backward, as the official SKD code does.
    """
    norm = feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps
    return feat / (norm.detach() if detach_norm else norm)


def pairwise_affinity_loss(
    student_feat: Tensor,
    teacher_feat: Tensor,
    pool: PairPool = "cirkd",
    scale: float = 0.5,
    detach_norm: bool = True,
    normalize_first: bool = False,
    block_size: int = 256,
    method: AffinityMethod = "auto",
) -> Tensor:
    """SKD pair-wise distillation on feature maps.

    With f_i the L2-normalised C-vector of node i (a pooled pixel), a_ij = f_i^T f_j and M nodes::

        L = 1 / (N * M^2) * sum_n sum_{i,j} (a^s_ij - a^t_ij)^2

    The reference code (official SKD and CIRKD) pools first, then normalises with a detached norm
    (``normalize_first=False, detach_norm=True``); the paper describes normalised features
    (``normalize_first=True``). The (M x M) matrices are never all in memory: the error is reduced in row
    blocks of ``block_size`` nodes or through channel Gram matrices, whichever is cheaper
    (:func:`segkd.losses.blocked.affinity_sq_error_sum`).

    Args:
        student_feat: (N, C_s, H_s, W_s).
        teacher_feat: (N, C_t, H, W); channel counts may differ. A student map of another size is
            bilinearly resized to the teacher's before pooling.
        pool, scale: see :func:`skd_pool`; the SKD kernel is computed from the teacher map size.
        detach_norm: treat the L2 norm as a constant in backward.
        normalize_first: normalise before pooling (paper) instead of after (reference code).
        block_size: nodes (rows of the affinity matrix) processed at once by the blocked method.
        method: ``auto``, ``gram`` or ``blocked`` (see :func:`segkd.losses.blocked.affinity_sq_error_sum`).

    Returns:
        A scalar tensor.
    """
    check_rank(student_feat, 4, "pairwise_affinity_loss student_feat")
    check_rank(teacher_feat, 4, "pairwise_affinity_loss teacher_feat")
    size = tuple(teacher_feat.shape[-2:])
    s = resize_to(student_feat, size)
    nodes = []
    for x in (s, teacher_feat):
        if normalize_first:
            x = l2_normalize_channels(x, detach_norm)
        x = skd_pool(x, pool, scale, reference_size=size)
        if not normalize_first:
            x = l2_normalize_channels(x, detach_norm)
        nodes.append(x.flatten(2))  # (N, C, M)
    n, _, m = nodes[1].shape
    return affinity_sq_error_sum(nodes[0], nodes[1], block_size, method) / (n * m * m)


def adversarial_d_loss(d_real: Tensor, d_fake: Tensor, kind: AdvLoss = "hinge") -> Tensor:
    """Discriminator loss on scores of teacher ("real") and student ("fake") maps.

    hinge (CIRKD):   mean(relu(1 - D(t))) + mean(relu(1 + D(s)))
    wgan-gp (SKD):   -mean(D(t)) + mean(D(s))   (add :func:`gradient_penalty` separately)
    Scores have any shape, e.g. (N,) or (N, 1, h, w).
    """
    if kind == "hinge":
        return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
    if kind == "wgan-gp":
        return d_fake.mean() - d_real.mean()
    raise ValueError(f"adversarial_d_loss: unknown kind '{kind}' (use 'hinge' or 'wgan-gp')")


def adversarial_g_loss(d_fake: Tensor) -> Tensor:
    """Generator (student) term for both hinge and WGAN: ``-mean(D(s))``."""
    return -d_fake.mean()


def gradient_penalty(discriminator: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     eps: float = 1e-12, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017) as in official SKD ``CriterionAdditionalGP``::

        x = a * real + (1 - a) * fake,  a ~ U(0, 1) per sample
        GP = mean_n (sqrt(||dD(x)/dx||^2 + eps) - 1)^2

    ``eps`` inside the square root keeps the gradient finite when ``dD/dx`` vanishes (the reference has
    no eps, a source of NaN D losses at small batch). Inputs (N, C, H, W) are detached; the penalty is
    differentiable w.r.t. the discriminator's parameters (``create_graph=True``).
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype, generator=generator)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        out = discriminator(mixed)
        (grad,) = torch.autograd.grad(out.sum(), mixed, create_graph=True)
    norm = (grad.flatten(1).pow(2).sum(dim=1) + eps).sqrt()
    return (norm - 1).pow(2).mean()
