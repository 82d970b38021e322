"""Adaptive average pooling that ONNX exports with symbolic height and width (for ``segkd export --dynamic``).

``nn.AdaptiveAvgPool2d(b)`` with ``b > 1`` (PSPNet's 2/3/6 bins) is exported by PyTorch for the example
input's size only: the bin boundaries become constant indices, and ONNX Runtime rejects any other input
size. Bin ``i`` of ``b`` over a length ``L`` covers ``[floor(i L / b), ceil((i + 1) L / b))`` (PyTorch's
definition, overlapping when ``L`` is not a multiple of ``b``). Here the bins are written as a pooling
matrix built from the runtime size,

    P[i, j] = 1 / (e_i - s_i)  if s_i <= j < e_i else 0,   s_i = (i L) // b,   e_i = ((i + 1) L + b - 1) // b,

and ``y = P_h x P_w^T`` for ``x`` (N, C, H, W) -> ``y`` (N, C, b_h, b_w). It is the same average (each
output the mean of the same pixels); only the order of the float additions differs, so results agree with
PyTorch's to float32 rounding (tested at 1e-6), not bit for bit. Only the exported copy uses it: training
and the PyTorch side of the parity check keep ``nn.AdaptiveAvgPool2d``.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def pooling_matrix(length: int, bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(bins, length)`` matrix averaging each adaptive-pooling bin (``length`` may be symbolic)."""
    j = torch.arange(length, device=device)
    i = torch.arange(bins, device=device)
    start = (i * length) // bins
    end = ((i + 1) * length + bins - 1) // bins
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(dtype) / (end - start)[:, None].to(dtype)


def _pair(output_size: int | None | tuple[int | None, int | None]) -> tuple[int | None, int | None]:
    if isinstance(output_size, (tuple, list)):
        return output_size[0], output_size[1]
    return output_size, output_size


def adaptive_avg_pool2d_matrix(x: Tensor, output_size: int | tuple[int | None, int | None]) -> Tensor:
    """``F.adaptive_avg_pool2d(x, output_size)`` as two matrix products; x (N, C, H, W). None keeps a side."""
    bins_h, bins_w = _pair(output_size)
    h, w = x.shape[-2], x.shape[-1]
    if bins_w is not None:
        x = x @ pooling_matrix(w, bins_w, x.dtype, x.device).transpose(0, 1)
    if bins_h is not None:
        x = pooling_matrix(h, bins_h, x.dtype, x.device) @ x
    return x


class MatrixAdaptiveAvgPool2d(nn.Module):
    """Drop-in replacement of ``nn.AdaptiveAvgPool2d`` for dynamic-shape ONNX export."""

    def __init__(self, output_size: int | tuple[int | None, int | None]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        if _pair(self.output_size) == (1, 1):
            return x.mean(dim=(-2, -1), keepdim=True)
        return adaptive_avg_pool2d_matrix(x, self.output_size)


def dynamic_export_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose ``AdaptiveAvgPool2d`` layers export with symbolic sizes.

    Raises ``ValueError`` naming the layer for adaptive pooling this module cannot express (max pooling),
    before anything is exported.
    """
    for name, module in model.named_modules():
        if isinstance(module, (nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveAvgPool1d)):
            raise ValueError(
                f"export --dynamic: layer '{name}' ({type(module).__name__}) cannot be exported with a "
                "symbolic input size; export without --dynamic (a fixed --size)"
            )
    clone = copy.deepcopy(model)
    for name, module in list(clone.named_modules()):
        if isinstance(module, nn.AdaptiveAvgPool2d):
            parent_name, _, child = name.rpartition(".")
            parent = clone.get_submodule(parent_name) if parent_name else clone
            setattr(parent, child, MatrixAdaptiveAvgPool2d(module.output_size))
    return clone
