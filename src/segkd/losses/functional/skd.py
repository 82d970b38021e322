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

from segkd.losses.blocked import AffinityMethod, affinity_sq_error_sum, use_gram
from segkd.losses.functional.common import check_rank, resize_to
from segkd.losses.functional.skd_gram import streamed_gram_sq_error_sum

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


def l2_normalize_channels(feat: Tensor, detach_norm: bool = True, eps: float = 1e-8,
                          clamp: bool = False) -> Tensor:
    """L2-normalise over channels per pixel; (N, C, H, W) -> same shape.

    ``clamp=False``: ``f / (||f||_2 + eps)`` (official SKD ``L2``, eps 1e-8); ``clamp=True``:
    ``f / max(||f||_2, eps)`` (``F.normalize``, as CIRKD's re-implementation, with eps 1e-12).
    ``detach_norm=True`` treats the norm as a constant in backward, as the official SKD code does.
    """
    if clamp:
        norm = torch.linalg.vector_norm(feat, dim=1, keepdim=True).clamp_min(eps)
    else:
        norm = feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps
    return feat / (norm.detach() if detach_norm else norm)


def default_detach_norm(pool: PairPool) -> bool:
    """The reference's choice for ``pool``: official SKD (``"skd"``) detaches the norm
    (``L2(feat).detach()`` in its ``utils.py``); CIRKD (``"cirkd"``, and ``"none"``) uses ``F.normalize``
    with the gradient flowing through the norm."""
    return pool == "skd"


def pairwise_affinity_loss(
    student_feat: Tensor,
    teacher_feat: Tensor,
    pool: PairPool = "cirkd",
    scale: float = 0.5,
    detach_norm: bool | None = None,
    normalize_first: bool = False,
    block_size: int = 256,
    method: AffinityMethod = "auto",
) -> Tensor:
    """SKD pair-wise distillation on feature maps.

    With f_i the L2-normalised C-vector of node i (a pooled pixel), a_ij = f_i^T f_j and M nodes::

        L = 1 / (N * M^2) * sum_n sum_{i,j} (a^s_ij - a^t_ij)^2

    Both reference codes pool first, then normalise (``normalize_first=False``); the paper describes
    normalised features (``normalize_first=True``). The normalisation follows the pool's reference:
    ``pool="skd"`` (official SKD ``sim_dis_compute``): ``f / (||f|| + 1e-8)`` with the norm detached;
    ``pool="cirkd"`` (CIRKD ``CriterionStructuralKD``) and ``"none"``: ``F.normalize`` (``f / max(||f||,
    1e-12)``) with the gradient through the norm. ``detach_norm`` overrides the detaching only.
    The (M x M) matrices are never all in memory: the error is reduced in row blocks of ``block_size``
    nodes or through channel Gram matrices, whichever is cheaper
    (:func:`segkd.losses.blocked.affinity_sq_error_sum`); the Gram method streams over row bands of the
    maps and never holds the pooled maps either
    (:func:`segkd.losses.functional.skd_gram.streamed_gram_sq_error_sum`).

    Args:
        student_feat: (N, C_s, H_s, W_s).
        teacher_feat: (N, C_t, H, W); channel counts may differ. A student map of another size is
            bilinearly resized to the teacher's before pooling.
        pool, scale: see :func:`skd_pool`; the SKD kernel is computed from the teacher map size.
        detach_norm: treat the L2 norm as a constant in backward; None (default): as the pool's reference
            (:func:`default_detach_norm`: detached for ``"skd"`` only).
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
    detach = default_detach_norm(pool) if detach_norm is None else detach_norm
    clamp = pool != "skd"
    eps = 1e-12 if clamp else 1e-8

    def node_fn(x: Tensor) -> Tensor:  # (N, C, rows, W) -> normalised nodes (N, C, m)
        if normalize_first:
            x = l2_normalize_channels(x, detach, eps, clamp)
        x = skd_pool(x, pool, scale, reference_size=size)
        if not normalize_first:
            x = l2_normalize_channels(x, detach, eps, clamp)
        return x.flatten(2)

    n, cs, ct = teacher_feat.shape[0], s.shape[1], teacher_feat.shape[1]
    m = skd_pool(teacher_feat[:1, :1], pool, scale, reference_size=size).flatten(2).shape[-1]
    if use_gram(cs, ct, m, method):
        total = streamed_gram_sq_error_sum(s, teacher_feat, node_fn, _pool_window(pool, scale, size))
    else:
        total = affinity_sq_error_sum(node_fn(s), node_fn(teacher_feat), block_size, "blocked")
    return total / (n * m * m)


def _pool_window(pool: PairPool, scale: float, size: tuple[int, int]) -> int:
    """Input rows of one pooling window of :func:`skd_pool` (bands of the streamed Gram method)."""
    return {"cirkd": 2, "none": 1}.get(pool) or max(1, int(scale * size[0]))


def adversarial_d_loss(d_real: Tensor, d_fake: Tensor, kind: AdvLoss = "hinge") -> Tensor:
    """Discriminator loss on score maps of teacher ("real") and student ("fake") inputs.

    hinge (CIRKD):   mean(relu(1 - D(t))) + mean(relu(1 + D(s)))
    wgan-gp (SKD):   -mean(D(t)) + mean(D(s))   (add :func:`gradient_penalty` separately)

    Means over every element: with (N, 1, h, w) maps the hinge acts **per location, then averages**, as
    both references do (``relu(1.0 - d_out_real).mean()``); a hinge on the per-sample mean score differs
    as soon as the map is larger than 1x1 (a 1x5 map for 64x128 logits, CIRKD's setting).
    """
    if kind == "hinge":
        return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
    if kind == "wgan-gp":
        return d_fake.mean() - d_real.mean()
    raise ValueError(f"adversarial_d_loss: unknown kind '{kind}' (use 'hinge' or 'wgan-gp')")


def adversarial_g_loss(d_fake: Tensor) -> Tensor:
    """Generator (student) term for both hinge and WGAN: ``-mean(D(s))`` over every element of the map."""
    return -d_fake.mean()


def gradient_penalty(discriminator: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     eps: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017) as in official SKD ``CriterionAdditionalGP``::

        x = a * real + (1 - a) * fake,  a ~ U(0, 1) per sample
        GP = mean_n (||d(sum D(x)) / dx_n||_2 - 1)^2

    ``D(x)`` is the discriminator's whole output (the (N, 1, h, w) score map): the references
    differentiate its *sum* (``grad_outputs=ones``), so each sample's gradient is that of its map's sum.
    The default ``eps=0`` gives the reference's value; the square root is guarded so that a vanishing
    gradient (norm 0) yields a penalty of 1 with a finite (zero) gradient instead of NaN. ``eps > 0``
    computes ``sqrt(||g||^2 + eps)`` instead. Inputs (N, C, H, W) are detached; the penalty is
    differentiable w.r.t. the discriminator's parameters (``create_graph=True``).
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype, generator=generator)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        out = discriminator(mixed)
        (grad,) = torch.autograd.grad(out.sum(), mixed, create_graph=True)
    sq = grad.flatten(1).pow(2).sum(dim=1) + eps
    positive = sq > 0
    norm = torch.where(positive, torch.where(positive, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))
    return (norm - 1).pow(2).mean()
