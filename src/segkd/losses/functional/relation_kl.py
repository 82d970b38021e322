"""Fused, row-blocked KL divergence between teacher and student similarity distributions.

Both CIRKD relational terms reduce the same quantity (Yang et al., CVPR 2022, Eqs. 4, 6, 7): for anchor
rows ``a_r`` and groups ``j`` of ``P`` columns ``c_{j,p}``, the similarity logits
``z[r, j, p] = a_r . c_{j,p} / tau`` of the student and of the teacher, and

    sum_{r, j} KL( softmax_p(z_t[r, j, :]) || softmax_p(z_s[r, j, :]) ).

Written with autograd ops, this costs about 20 passes over the (R x J*P) logit matrix per step (two
log-softmaxes, exp, difference, product and sum forward; each of them again backward) and, under
activation checkpointing, a full recomputation. This module writes the gradient by hand instead: with
``p = softmax(z)``, ``dKL / dz_s = p_s - p_t``, so the backward is two matrix products with that
difference. No library offers this fused reduction, hence a custom :class:`torch.autograd.Function`.

Memory: when the rows fit in one block the difference ``p_s - p_t`` (R x J*P) is kept for backward;
otherwise nothing but the inputs is kept and each block is recomputed in backward, so peak memory grows
with ``block * J * P``, never with R * J * P. The teacher side never receives gradients.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BLOCK_ELEMENTS", "block_rows", "similarity_kl_sum"]

# Similarities per block when no row count is given: 4 Mi floats (16 MiB in float32) per (rows x J*P)
# matrix; a block holds about five such buffers at once.
BLOCK_ELEMENTS = 2**22


def block_rows(columns: int, block: int | None = None) -> int:
    """Rows per block: ``block`` when given (must be >= 1), else as many as keep ``rows * columns`` within
    :data:`BLOCK_ELEMENTS` (at least one row)."""
    if block is None:
        return max(1, BLOCK_ELEMENTS // max(columns, 1))
    if block < 1:
        raise ValueError(f"similarity_kl_sum: block must be >= 1, got {block}")
    return block


def _block_terms(s_rows: Tensor, s_cols: Tensor, t_rows: Tensor, t_cols: Tensor, groups: int,
                 inv_tau: float, want_grad: bool) -> tuple[Tensor, Tensor | None]:
    """KL sum of one row block and, when ``want_grad``, ``p_s - p_t`` as (b, J*P)."""
    b = s_rows.shape[0]
    z_s = ((s_rows * inv_tau) @ s_cols.T).view(b, groups, -1)  # (b, J, P)
    z_t = ((t_rows * inv_tau) @ t_cols.T).view(b, groups, -1)
    log_p_s = F.log_softmax(z_s, dim=-1)
    log_p_t = F.log_softmax(z_t, dim=-1)
    p_t = torch.exp(log_p_t, out=z_t)  # z_t is no longer needed: reuse its (already touched) memory
    kl = torch.dot(p_t.reshape(-1), log_p_t.sub_(log_p_s).reshape(-1))  # in place: no new (b, J*P) buffer
    if not want_grad:
        return kl, None
    return kl, log_p_s.exp_().sub_(p_t).view(b, -1)


class _SimilarityKL(torch.autograd.Function):
    """Autograd function behind :func:`similarity_kl_sum` (inputs already flattened to 2-d)."""

    @staticmethod
    def forward(ctx: Any, s_rows: Tensor, s_cols: Tensor, t_rows: Tensor, t_cols: Tensor, groups: int,
                temperature: float, block: int) -> Tensor:
        inv_tau = 1.0 / temperature
        want_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        single = s_rows.shape[0] <= block
        total = s_rows.new_zeros(())
        kept: Tensor | None = None
        for start in range(0, s_rows.shape[0], block):
            sl = slice(start, start + block)
            kl, diff = _block_terms(s_rows[sl], s_cols, t_rows[sl], t_cols, groups, inv_tau,
                                    want_grad and single)
            total = total + kl
            kept = diff
        ctx.groups, ctx.inv_tau, ctx.block = groups, inv_tau, block
        ctx.save_for_backward(s_rows, s_cols, t_rows, t_cols, *(() if kept is None else (kept,)))
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        s_rows, s_cols, t_rows, t_cols, *kept = ctx.saved_tensors
        need_rows, need_cols = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_rows = torch.zeros_like(s_rows) if need_rows else None
        grad_cols = torch.zeros_like(s_cols) if need_cols else None
        scale = grad_out * ctx.inv_tau
        for start in range(0, s_rows.shape[0], ctx.block):
            sl = slice(start, start + ctx.block)
            if kept:
                diff = kept[0]
            else:
                _, diff = _block_terms(s_rows[sl], s_cols, t_rows[sl], t_cols, ctx.groups, ctx.inv_tau, True)
            # d total / d z_s = p_s - p_t; z_s = row . col / tau.
            if grad_rows is not None:
                grad_rows[sl] = (diff @ s_cols).mul_(scale)
            if grad_cols is not None:
                grad_cols.addmm_(diff.T, s_rows[sl] * scale)
        return grad_rows, grad_cols, None, None, None, None, None


def similarity_kl_sum(s_rows: Tensor, s_cols: Tensor, t_rows: Tensor, t_cols: Tensor, temperature: float,
                      block: int | None = None) -> Tensor:
    """``sum_{r, j} KL(softmax(t_rows[r] t_cols[j]^T / tau) || softmax(s_rows[r] s_cols[j]^T / tau))``.

    Shapes: ``s_rows`` (R, Cs) and ``t_rows`` (R, Ct) anchors; ``s_cols`` (J, P, Cs) and ``t_cols``
    (J, P, Ct): J groups of P columns (images, or one contrast set with J = 1). Each softmax runs over
    the P columns of one group. Gradients flow to ``s_rows`` and ``s_cols`` (which may be views of one
    tensor); the teacher inputs are treated as constants. ``block``: anchor rows per block (>= 1), or
    None to size blocks by :data:`BLOCK_ELEMENTS` (all rows at once when they fit).

    Returns:
        0-d tensor: the sum of R * J row-KLs.
    """
    if s_cols.dim() != 3 or t_cols.dim() != 3 or s_cols.shape[:2] != t_cols.shape[:2]:
        raise ValueError(f"similarity_kl_sum: cols must be (J, P, C) with equal J, P; got "
                         f"{tuple(s_cols.shape)} and {tuple(t_cols.shape)}")
    if s_rows.shape[0] != t_rows.shape[0]:
        raise ValueError(f"similarity_kl_sum: {s_rows.shape[0]} student rows but {t_rows.shape[0]} "
                         "teacher rows")
    groups, rows = s_cols.shape[0], block_rows(s_cols.shape[0] * s_cols.shape[1], block)
    return _SimilarityKL.apply(s_rows, s_cols.reshape(-1, s_cols.shape[-1]), t_rows.detach(),
                               t_cols.detach().reshape(-1, t_cols.shape[-1]), groups, temperature, rows)
