"""Pure functions of CIRKD: cross-image relational knowledge distillation.

Paper: Yang et al., "Cross-Image Relational Knowledge Distillation for Semantic Segmentation", CVPR 2022.
Each function takes tensors and returns a scalar; state (memory queues, projection head, process groups)
lives in :mod:`segkd.losses.cirkd` and :mod:`segkd.losses.queues`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from segkd.losses.functional.common import check_rank
from segkd.losses.functional.relation_kl import similarity_kl_sum

__all__ = ["cross_image_pixel_kd", "cross_image_pixel_kd_naive_sum", "memory_contrast_kd"]


def _as_pixels(x: Tensor) -> Tensor:
    """(N, C, h, w) -> L2-normalised over channels, (N, h*w, C)."""
    return F.normalize(x, p=2, dim=1).flatten(2).transpose(1, 2)


def cross_image_pixel_kd(
    anchor_s: Tensor,
    anchor_t: Tensor,
    contrast_s: Tensor | None = None,
    contrast_t: Tensor | None = None,
    temperature: float = 0.1,
    block: int | None = None,
    matmul_dtype: torch.dtype | None = None,
) -> Tensor:
    """CIRKD mini-batch pixel-to-pixel loss, computed in row blocks.

    With F_i the (P, C) L2-normalised embedding of image i (P = h*w pixels), the pair matrix of images
    (i, j) is S_ij = F_i F_j^T (P x P). The loss (paper Eq. 4, reference ``cirkd_mini_batch.py``) is

        L = 1 / (A * J * P) * sum_{i, j} sum_{p} KL( softmax(S^t_ij[p] / tau) || softmax(S^s_ij[p] / tau) )

    over anchor images i (A of them) and contrast images j (J of them): the row-KL is averaged over rows
    ("batchmean"), then over the A * J ordered pairs, with no tau^2 factor. Ignored pixels are not masked.

    Memory and speed: the P x P matrices of all pairs are never held at once. Rows are processed ``block``
    at a time against all J images by :func:`segkd.losses.functional.relation_kl.similarity_kl_sum`
    (hand-written gradient ``p_s - p_t``, accumulated during the forward sweep), so peak memory grows with
    one block (``block * J * P`` similarities) instead of ``A * J * P^2`` and no block is computed twice.
    Value and gradient equal the naive computation.

    Args:
        anchor_s: student feat of the anchor images, (A, Cs, h, w); raw (normalised here).
        anchor_t: teacher feat, (A, Ct, h, w) (channel counts may differ; spatial sizes must match).
        contrast_s / contrast_t: feats of the images the anchors are compared to, (J, C, h, w);
            default: the anchors themselves (J = A, the single-process mini-batch).
        temperature: tau of the similarity softmax (0.1 in CIRKD).
        block: anchor rows per block; None sizes blocks to about 4 Mi similarities
            (:func:`segkd.losses.functional.relation_kl.block_rows`).
        matmul_dtype: None (exact, default) or ``torch.bfloat16`` / ``torch.float16`` for the similarity
            and gradient products only (softmaxes and KL in float32; bound in
            :mod:`segkd.losses.functional.relation_kl`).
    Returns:
        0-d tensor.
    """
    for x, name in ((anchor_s, "anchor_s"), (anchor_t, "anchor_t")):
        check_rank(x, 4, name)
    if anchor_s.shape[-2:] != anchor_t.shape[-2:] or anchor_s.shape[0] != anchor_t.shape[0]:
        raise ValueError(
            f"cirkd batch p2p: student {tuple(anchor_s.shape)} and teacher "
            f"{tuple(anchor_t.shape)} must agree in batch and spatial size"
        )
    contrast_s = anchor_s if contrast_s is None else contrast_s
    contrast_t = anchor_t if contrast_t is None else contrast_t
    rows_s, rows_t = _as_pixels(anchor_s).flatten(0, 1), _as_pixels(anchor_t).flatten(0, 1)
    cols_s, cols_t = _as_pixels(contrast_s), _as_pixels(contrast_t)
    total = similarity_kl_sum(rows_s, cols_s, rows_t, cols_t, temperature, block, matmul_dtype)
    return total / (rows_s.shape[0] * cols_s.shape[0])


def cross_image_pixel_kd_naive_sum(feat_s: Tensor, feat_t: Tensor, temperature: float = 0.1) -> Tensor:
    """Reference-shaped (pair-by-pair) mini-batch p2p loss on one batch; O(B^2 P^2) memory in backward.

    Kept for benchmarking the blocked version; shapes as :func:`cross_image_pixel_kd` with A = J = B.
    """
    fs, ft = _as_pixels(feat_s), _as_pixels(feat_t)
    b = fs.shape[0]
    total = fs.new_zeros(())
    for i in range(b):
        for j in range(b):
            log_p_s = F.log_softmax(fs[i] @ fs[j].T / temperature, dim=1)
            p_t = F.softmax(ft[i] @ ft[j].T / temperature, dim=1)
            total = total + F.kl_div(log_p_s, p_t, reduction="batchmean")
    return total / (b * b)


def memory_contrast_kd(
    anchor_s: Tensor,
    anchor_t: Tensor,
    contrast: Tensor,
    temperature: float = 0.1,
    kd_temperature: float = 1.0,
    block: int | None = None,
) -> Tensor:
    """CIRKD memory-based pixel-to-pixel / pixel-to-region distillation (paper Eqs. 6-7).

    Logits of an anchor against the contrast set Q are ``a Q^T / tau``; the loss is

        L = T^2 / M * sum_m KL( softmax(t_m Q^T / (tau T)) || softmax(s_m Q^T / (tau T)) )

    with tau = ``temperature`` (0.1) and T = ``kd_temperature`` (1 in CIRKD). Shapes: ``anchor_s`` (M, D)
    projected + L2-normalised student anchors, ``anchor_t`` (M, D) L2-normalised teacher anchors,
    ``contrast`` (Q, D) teacher pixel or region embeddings from the memory. M = 0 returns a zero that
    keeps the graph (the reference's trick for all-ignored batches). ``block``: anchors per block of the
    fused computation (:func:`segkd.losses.functional.relation_kl.similarity_kl_sum`); the memory queue is
    a constant (no gradient), as in the reference.
    """
    if anchor_s.shape[0] == 0:
        return anchor_s.sum() * 0.0
    cols = contrast.detach().unsqueeze(0)  # one group: every anchor against the whole contrast set
    total = similarity_kl_sum(anchor_s, cols, anchor_t, cols, temperature * kd_temperature, block)
    return total / anchor_s.shape[0] * kd_temperature**2
