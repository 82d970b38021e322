"""Fused, row-blocked KL divergence between teacher and student similarity distributions.

Both CIRKD relational terms reduce the same quantity (Yang et al., CVPR 2022, Eqs. 4, 6, 7): for anchor
rows ``a_r`` and groups ``j`` of ``P`` columns ``c_{j,p}``, the similarity logits
``z[r, j, p] = a_r . c_{j,p} / tau`` of the student and of the teacher, and

    sum_{r, j} KL( softmax_p(z_t[r, j, :]) || softmax_p(z_s[r, j, :]) ).

Written with autograd ops, this costs about 20 passes over the (R x J*P) logit matrix per step (two
log-softmaxes, exp, difference, product and sum forward; each of them again backward) and, under
activation checkpointing, a full recomputation. This module writes the gradient by hand instead: with
``p = softmax(z)``, ``dKL / dz_s = p_s - p_t``, so the gradient of a block is two matrix products with
that difference. No library offers this fused reduction, hence a custom :class:`torch.autograd.Function`.

Eager gradient: the value is a scalar, so the gradient with respect to the (small, R x C) inputs is
complete once every block has been seen. When gradients are wanted it is therefore accumulated *during the
forward pass*, block by block, and the backward only scales it by the incoming gradient: no block is
computed twice (the earlier version recomputed every block in backward). Matrix products per step, in
units of ``R * J*P * C_s`` multiply-adds: student and teacher logits ``1 + C_t/C_s``, gradient 2; the
reference-shaped autograd computation (all pair matrices at once) needs the same products but about 20
passes over the whole (R x J*P) matrices in memory.

Memory: one block of ``block * J*P`` similarities (about five buffers of it) plus the two gradients of
the inputs' size; never anything of size R * J*P. The teacher side never receives gradients.

Precision path (opt-in, ``matmul_dtype``): the similarity and gradient products run in a lower precision
(``torch.bfloat16`` / ``torch.float16``: tensor cores on GPU) and are cast up to float32 before the
softmaxes, the KL and the accumulation, which stay in float32. The default (None) computes everything in
the inputs' dtype (exact up to summation order). Bound, measured on CPU with bfloat16 by
``tests/test_relation_kl.py::test_low_precision_matmul_within_stated_bound``: relative error of the value
and of the gradient (max-abs over max-abs) within :data:`LOW_PRECISION_RTOL` (5%). Measured on CPU for
CIRKD-like inputs (2 images x 512 pixels, 128 / 256 channels, tau 0.1, 3 seeds): bfloat16 value 0.7-1.5e-5,
gradient 3.8-5.1e-3; float16 value 3.5-6.6e-6, gradient 4.3-5.0e-4.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from segkd.losses.functional.eager_grad import take_eager_grads

__all__ = ["BLOCK_ELEMENTS", "LOW_PRECISION_RTOL", "block_rows", "similarity_kl_sum"]

# Similarities per block when no row count is given: 4 Mi floats (16 MiB in float32) per (rows x J*P)
# matrix; a block holds about five such buffers at once.
BLOCK_ELEMENTS = 2**22

# Stated bound of the bfloat16 precision path (relative to the float64 value / gradient), checked on CPU.
LOW_PRECISION_RTOL = 0.05


def block_rows(columns: int, block: int | None = None) -> int:
    """Rows per block: ``block`` when given (must be >= 1), else as many as keep ``rows * columns`` within
    :data:`BLOCK_ELEMENTS` (at least one row)."""
    if block is None:
        return max(1, BLOCK_ELEMENTS // max(columns, 1))
    if block < 1:
        raise ValueError(f"similarity_kl_sum: block must be >= 1, got {block}")
    return block


def _mm(a: Tensor, b: Tensor, dtype: torch.dtype | None, out_dtype: torch.dtype) -> Tensor:
    """``a @ b``, in ``dtype`` when given (result cast to ``out_dtype``), else in the inputs' dtype."""
    if dtype is None or dtype == a.dtype:
        return a @ b
    return (a.to(dtype) @ b.to(dtype)).to(out_dtype)


def _block_terms(s_rows: Tensor, s_cols: Tensor, t_rows: Tensor, t_cols: Tensor, groups: int,
                 inv_tau: float, want_grad: bool,
                 matmul_dtype: torch.dtype | None) -> tuple[Tensor, Tensor | None]:
    """KL sum of one row block and, when ``want_grad``, ``p_s - p_t`` as (b, J*P)."""
    b, acc = s_rows.shape[0], s_rows.dtype
    z_s = _mm(s_rows * inv_tau, s_cols.T, matmul_dtype, acc).view(b, groups, -1)  # (b, J, P)
    z_t = _mm(t_rows * inv_tau, t_cols.T, matmul_dtype, acc).view(b, groups, -1)
    log_p_s = F.log_softmax(z_s, dim=-1)
    log_p_t = F.log_softmax(z_t, dim=-1)
    p_t = torch.exp(log_p_t, out=z_t)  # z_t is no longer needed: reuse its (already touched) memory
    kl = torch.dot(p_t.reshape(-1), log_p_t.sub_(log_p_s).reshape(-1))  # in place: no new (b, J*P) buffer
    if not want_grad:
        return kl, None
    return kl, log_p_s.exp_().sub_(p_t).view(b, -1)


def _sweep(s_rows: Tensor, s_cols: Tensor, t_rows: Tensor, t_cols: Tensor, groups: int, inv_tau: float,
           block: int, need_rows: bool, need_cols: bool,
           matmul_dtype: torch.dtype | None) -> tuple[Tensor, list[Tensor | None]]:
    """The KL sum over every row block and, as asked, the gradients of the rows and the columns."""
    grad_rows = torch.empty_like(s_rows) if need_rows else None
    grad_cols = torch.zeros_like(s_cols) if need_cols else None
    total = s_rows.new_zeros(())
    for start in range(0, s_rows.shape[0], block):
        sl = slice(start, start + block)
        kl, diff = _block_terms(s_rows[sl], s_cols, t_rows[sl], t_cols, groups, inv_tau,
                                need_rows or need_cols, matmul_dtype)
        total += kl
        # d total / d z_s = p_s - p_t; z_s = row . col / tau.
        if grad_rows is not None:
            grad_rows[sl] = _mm(diff, s_cols, matmul_dtype, diff.dtype)
        if grad_cols is not None:
            grad_cols += _mm(diff.T, s_rows[sl], matmul_dtype, diff.dtype)
    for grad in (grad_rows, grad_cols):
        if grad is not None:
            grad.mul_(inv_tau)
    return total, [grad_rows, grad_cols]


class _SimilarityKL(torch.autograd.Function):
    """Autograd function behind :func:`similarity_kl_sum` (inputs already flattened to 2-d).

    The gradient is accumulated in forward (see the module docstring); backward scales it.
    """

    @staticmethod
    def forward(ctx: Any, s_rows: Tensor, s_cols: Tensor, t_rows: Tensor, t_cols: Tensor, groups: int,
                temperature: float, block: int, want_grad: bool, matmul_dtype: torch.dtype | None) -> Tensor:
        args = (groups, 1.0 / temperature, block, want_grad and ctx.needs_input_grad[0],
                want_grad and ctx.needs_input_grad[1], matmul_dtype)
        total, ctx.grads = _sweep(s_rows, s_cols, t_rows, t_cols, *args)
        ctx.save_for_backward(s_rows, s_cols, t_rows, t_cols)
        ctx.args = args
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        def again() -> list[Tensor | None]:
            with torch.autocast(grad_out.device.type, enabled=False):
                return _sweep(*ctx.saved_tensors, *ctx.args)[1]

        return (*take_eager_grads(ctx, grad_out, "similarity_kl_sum", again), *[None] * 7)


def similarity_kl_sum(s_rows: Tensor, s_cols: Tensor, t_rows: Tensor, t_cols: Tensor, temperature: float,
                      block: int | None = None, matmul_dtype: torch.dtype | None = None) -> Tensor:
    """``sum_{r, j} KL(softmax(t_rows[r] t_cols[j]^T / tau) || softmax(s_rows[r] s_cols[j]^T / tau))``.

    Shapes: ``s_rows`` (R, Cs) and ``t_rows`` (R, Ct) anchors; ``s_cols`` (J, P, Cs) and ``t_cols``
    (J, P, Ct): J groups of P columns (images, or one contrast set with J = 1). Each softmax runs over
    the P columns of one group. Gradients flow to ``s_rows`` and ``s_cols`` (which may be views of one
    tensor); the teacher inputs are treated as constants. ``block``: anchor rows per block (>= 1), or
    None to size blocks by :data:`BLOCK_ELEMENTS` (all rows at once when they fit). ``matmul_dtype``:
    None (default, exact) or a lower precision for the matrix products (see the module docstring);
    softmaxes and sums stay in float32 then. Half-precision inputs (autocast) are cast up to float32 first,
    so the softmaxes and the KL never run in half precision.

    Returns:
        0-d tensor: the sum of R * J row-KLs (float32 on the precision path, else the inputs' dtype).
    """
    if s_cols.dim() != 3 or t_cols.dim() != 3 or s_cols.shape[:2] != t_cols.shape[:2]:
        raise ValueError(f"similarity_kl_sum: cols must be (J, P, C) with equal J, P; got "
                         f"{tuple(s_cols.shape)} and {tuple(t_cols.shape)}")
    if s_rows.shape[0] != t_rows.shape[0]:
        raise ValueError(f"similarity_kl_sum: {s_rows.shape[0]} student rows but {t_rows.shape[0]} "
                         "teacher rows")
    groups, rows = s_cols.shape[0], block_rows(s_cols.shape[0] * s_cols.shape[1], block)
    want_grad = torch.is_grad_enabled() and (s_rows.requires_grad or s_cols.requires_grad)
    tensors = (s_rows, s_cols.reshape(-1, s_cols.shape[-1]), t_rows.detach(),
               t_cols.detach().reshape(-1, t_cols.shape[-1]))
    acc = torch.promote_types(s_rows.dtype, torch.float32)  # half-precision (AMP) inputs: float32 softmaxes
    tensors = tuple(t.to(acc) for t in tensors)
    with torch.autocast(s_rows.device.type, enabled=False):  # precision is matmul_dtype's, not autocast's
        return _SimilarityKL.apply(*tensors, groups, temperature, rows, want_grad, matmul_dtype)
