"""SAGAN-style discriminator used by the SKD holistic (adversarial) term.

Zhang et al., "Self-Attention Generative Adversarial Networks" (ICML 2019), as configured by the official
SKD code (Liu et al., CVPR 2019; ``networks/sagan_models.py``) and reused by CIRKD (``utils/sagan.py``):
an input normalisation layer ("preprocess": BatchNorm2d over the C input channels), spectral-norm conv
4x4/2 + LeakyReLU(0.1) with widths C -> 64 -> 128 -> 256, self-attention, -> 512, self-attention,
conv 4x4 -> 1. Output: the (N, 1, h, w) score map (not pooled: the losses act per location).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

Preprocess = Literal["bn", "tanh"]


def _pad_to_min(x: Tensor, min_size: int) -> Tensor:
    """Zero-pad a (N, C, H, W) map symmetrically so that H, W >= ``min_size``.

    Lets the discriminator run on small score maps (16x16 and below), where the plain SAGAN stack would
    shrink a side to zero; maps that are large enough are returned unchanged.
    """
    dh, dw = max(0, min_size - x.shape[-2]), max(0, min_size - x.shape[-1])
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def _l2normalize(v: Tensor, eps: float = 1e-12) -> Tensor:
    """``v / (||v||_2 + eps)``, the references' ``l2normalize``."""
    return v / (v.norm() + eps)


class SpectralNormVU(nn.Module):
    """Spectral normalisation ``W / sigma(W)`` with the references' power iteration (a parametrization).

    Miyato et al. (ICLR 2018) as coded in the SKD/CIRKD ``SpectralNorm``: with the weight viewed as a
    (out, in*k*k) matrix W and persistent unit vectors u (out,), v (in*k*k,), each training-mode forward
    does one iteration **v first, then u**::

        v <- normalize(W^T u);  u <- normalize(W v);  sigma = u^T W v     (u, v constants in backward)

    so that sigma = ||W v|| after the step. ``torch.nn.utils.parametrizations.spectral_norm`` updates u
    first (sigma = ||W^T u||) and runs 15 extra iterations at construction; the two differ at every step
    (tests/test_losses_skd.py pins both orders by hand). u, v start as normalised N(0, 1) draws, without
    warm-up iterations, as in the references. In eval mode u, v are not updated.
    """

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        rows = weight.shape[0]
        cols = weight.numel() // rows
        self.register_buffer("u", _l2normalize(weight.new_empty(rows).normal_(0, 1)))
        self.register_buffer("v", _l2normalize(weight.new_empty(cols).normal_(0, 1)))

    def forward(self, weight: Tensor) -> Tensor:
        mat = weight.flatten(1)
        if self.training:
            with torch.no_grad():
                self.v.copy_(_l2normalize(mat.t() @ self.u))
                self.u.copy_(_l2normalize(mat @ self.v))
        # Clones: a later forward updates u, v in place; this pass's backward keeps its own vectors.
        sigma = torch.dot(self.u.clone(), mat @ self.v.clone())
        return weight / sigma


def spectral_norm_vu(module: nn.Module, name: str = "weight") -> nn.Module:
    """Register :class:`SpectralNormVU` on ``module.<name>``; returns the module."""
    parametrize.register_parametrization(module, name, SpectralNormVU(getattr(module, name)))
    return module


class SelfAttention(nn.Module):
    """SAGAN self-attention: ``y = gamma * (V softmax(Q^T K)^T) + x``, Q/K: C/8 channels, gamma=0 at init.

    Input and output (N, C, H, W); the attention matrix is (N, HW, HW) (small after three stride-2 convs).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(1, channels // 8)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        # The three 1x1 convolutions as one matrix product: on the few pixels left at this depth, one
        # matmul costs a fraction of three oneDNN convolutions (one-off CPU timing: 3x faster fwd+bwd).
        convs = (self.query, self.key, self.value)
        weight = torch.cat([c.weight.flatten(1) for c in convs])  # (2C' + C, C)
        bias = torch.cat([c.bias for c in convs])
        qkv = torch.matmul(weight, x.flatten(2)) + bias[:, None]  # (N, 2C' + C, M)
        q, k, v = qkv.split([self.query.out_channels, self.key.out_channels, x.shape[1]], dim=1)
        attn = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # (N, M, M)
        out = torch.bmm(v, attn.transpose(1, 2)).view_as(x)
        return self.gamma * out + x


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(spectral_norm_vu(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.1))


class SAGANDiscriminator(nn.Module):
    """Scores (N, C_in, H, W) maps; returns the final score map, (N, 1, h, w).

    ``preprocess``: "bn" (default; both references' ``preprocess_GAN_mode=1``, a BatchNorm2d over the
    input channels, batch statistics in training mode) or "tanh" (their mode 2). The SAGAN last conv
    (4x4, no padding, no spectral norm) yields an (H/16 - 3) x (W/16 - 3) map on large inputs; inputs are
    zero-padded where needed so that no layer shrinks below 1x1 (the references fail on such maps).
    Parameter count at ``conv_dim=64`` for 19 input channels: 3,191,721 (the references').
    """

    def __init__(self, in_channels: int, conv_dim: int = 64, preprocess: Preprocess = "bn") -> None:
        super().__init__()
        if preprocess not in ("bn", "tanh"):
            raise ValueError(f"discriminator: preprocess must be 'bn' or 'tanh', got '{preprocess}'")
        self.preprocess: nn.Module = nn.BatchNorm2d(in_channels) if preprocess == "bn" else nn.Tanh()
        d = conv_dim
        self.l1, self.l2, self.l3 = _down(in_channels, d), _down(d, 2 * d), _down(2 * d, 4 * d)
        self.attn1 = SelfAttention(4 * d)
        self.l4 = _down(4 * d, 8 * d)
        self.attn2 = SelfAttention(8 * d)
        self.last = nn.Conv2d(8 * d, 1, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = self.preprocess(x)
        for layer in (self.l1, self.l2, self.l3):
            x = layer(_pad_to_min(x, 2))
        x = self.attn1(x)
        x = self.attn2(self.l4(_pad_to_min(x, 2)))
        return self.last(_pad_to_min(x, 4))
