"""SKD pair-wise loss through channel Gram matrices, streamed over row bands of the feature maps.

Liu et al., "Structured Knowledge Distillation for Semantic Segmentation" (CVPR 2019), pair-wise term:
with ``F_s`` (C_s x M) and ``F_t`` (C_t x M) the L2-normalised node embeddings of one image (M pooled
pixels), the affinity matrices are ``A = F^T F`` (M x M) and

    sum_{i,j} (A^s_ij - A^t_ij)^2 = ||F_s F_s^T||^2 - 2 ||F_s F_t^T||^2 + ||F_t F_t^T||^2    (Frobenius),

    d/dF_s = 4 (G_s F_s - X F_t),   G_s = F_s F_s^T (C_s x C_s),  X = F_s F_t^T (C_s x C_t).

The Gram matrices are sums over nodes, so they can be accumulated over bands of rows of the input map
whose pooling windows do not cross the band edges. :func:`streamed_gram_sq_error_sum` does so inside one
:class:`torch.autograd.Function`: nothing of the size of the (pooled, normalised) maps is ever held, only
one band at a time, the small Gram matrices, and the gradient of the student map itself. The gradient is
computed during the forward pass (a second sweep over the bands, with the Gram matrices final), through
the *same* PyTorch pooling and normalisation ops run on each band under autograd, so tie-breaking of
the max pool and the clamped norm's gradient are those of the plain autograd computation. Memory of a
call: the student map's gradient plus one band, against the pooled and normalised maps of both networks,
the pool indices and their gradients (several times the input size) for the plain autograd graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from segkd.losses.functional.eager_grad import take_eager_grads

__all__ = ["BAND_NODES", "streamed_gram_sq_error_sum"]

NodeFn = Callable[[Tensor], Tensor]

# Nodes (pooled pixels) per band when streaming: 1024 nodes of 256 channels are 1 MiB in float32.
BAND_NODES = 1024


def _bands(height: int, window: int, nodes_per_row: int, band_nodes: int) -> list[tuple[int, int]]:
    """Input-row ranges made of whole pooling windows (``window`` input rows each, ``nodes_per_row``
    nodes per window row), about ``band_nodes`` nodes per band (at least one window)."""
    windows = max(1, band_nodes // max(nodes_per_row, 1))
    step = windows * window
    return [(r, min(r + step, height)) for r in range(0, height, step)]


def _grams(fs: Tensor, ft: Tensor, node_fn: NodeFn, bands: list[tuple[int, int]]) -> tuple[Tensor, ...]:
    """Per image: G_s (N, Cs, Cs), X (N, Cs, Ct), G_t (N, Ct, Ct), summed over the bands."""
    n, cs, ct = fs.shape[0], fs.shape[1], ft.shape[1]
    g_s, x, g_t = fs.new_zeros(n, cs, cs), fs.new_zeros(n, cs, ct), fs.new_zeros(n, ct, ct)
    for r0, r1 in bands:
        s, t = node_fn(fs[:, :, r0:r1]), node_fn(ft[:, :, r0:r1])  # (N, C, m)
        g_s.baddbmm_(s, s.transpose(1, 2))
        x.baddbmm_(s, t.transpose(1, 2))
        g_t.baddbmm_(t, t.transpose(1, 2))
    return g_s, x, g_t


def _sweep(fs: Tensor, ft: Tensor, node_fn: NodeFn, window: int, band_nodes: int,
           want_grad: bool) -> tuple[Tensor, list[Tensor | None]]:
    """The sum of squared affinity differences and, when ``want_grad``, its gradient w.r.t. ``fs``."""
    nodes_per_row = node_fn(fs[:1, :1, :window]).shape[-1] * fs.shape[0]  # over the whole batch
    bands = _bands(fs.shape[2], window, nodes_per_row, band_nodes)
    g_s, x, g_t = _grams(fs, ft, node_fn, bands)
    total = g_s.pow(2).sum() - 2 * x.pow(2).sum() + g_t.pow(2).sum()
    if not want_grad:
        return total, [None]
    grad = torch.empty_like(fs)
    for r0, r1 in bands:
        t = node_fn(ft[:, :, r0:r1])
        band = fs[:, :, r0:r1].detach().requires_grad_(True)
        with torch.enable_grad():
            s = node_fn(band)
        g_nodes = 4 * (torch.bmm(g_s, s.detach()) - torch.bmm(x, t))
        (grad[:, :, r0:r1],) = torch.autograd.grad(s, band, g_nodes)
    return total, [grad]


class _StreamedGram(torch.autograd.Function):
    """Autograd function behind :func:`streamed_gram_sq_error_sum`; the gradient is computed in forward."""

    @staticmethod
    def forward(ctx: Any, fs: Tensor, ft: Tensor, node_fn: NodeFn, window: int, band_nodes: int,
                want_grad: bool) -> Tensor:
        ctx.args = (node_fn, window, band_nodes, want_grad)
        total, ctx.grads = _sweep(fs, ft, *ctx.args)
        ctx.save_for_backward(fs, ft)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        def again() -> list[Tensor | None]:
            with torch.autocast(grad_out.device.type, enabled=False):
                return _sweep(*ctx.saved_tensors, *ctx.args)[1]

        return (*take_eager_grads(ctx, grad_out, "streamed_gram_sq_error_sum", again), *[None] * 5)


def streamed_gram_sq_error_sum(student_feat: Tensor, teacher_feat: Tensor, node_fn: NodeFn, window: int,
                               band_nodes: int = BAND_NODES) -> Tensor:
    """``sum_{n,i,j} (A^s_n[i,j] - A^t_n[i,j])^2`` with ``A_n = F_n^T F_n`` and ``F = node_fn(feat)``.

    Args:
        student_feat: (N, C_s, H, W); gradients flow to it.
        teacher_feat: (N, C_t, H, W), treated as a constant (same N, H, W).
        node_fn: maps a band of rows ``feat[:, :, r0:r1]`` to its L2-normalised nodes, (N, C, m); it must
            act on whole pooling windows only (pool, then per-node normalisation).
        window: input rows per pooling window (2 for CIRKD's 2x2 pool, 1 without pooling); bands start
            at multiples of it.
        band_nodes: about how many nodes (over the batch) one band holds; memory ~ band_nodes * (C_s + C_t).

    Returns:
        0-d tensor (the Gram identity's cancellation applies: see
        :func:`segkd.losses.blocked.affinity_sq_error_sum`); always computed in float32 or float64,
        autocast or half-precision inputs notwithstanding.
    """
    if student_feat.dim() != 4 or student_feat.shape[0] != teacher_feat.shape[0] \
            or student_feat.shape[2:] != teacher_feat.shape[2:]:
        raise ValueError(f"streamed_gram_sq_error_sum: need (N, C, H, W) maps with equal N, H, W, got "
                         f"{tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}")
    want_grad = torch.is_grad_enabled() and student_feat.requires_grad
    acc = torch.promote_types(student_feat.dtype, torch.float32)  # the identity cancels: never in half
    fs, ft = student_feat.to(acc), teacher_feat.detach().to(acc)
    with torch.autocast(fs.device.type, enabled=False):
        return _StreamedGram.apply(fs, ft, node_fn, window, band_nodes, want_grad)
