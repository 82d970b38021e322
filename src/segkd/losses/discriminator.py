"""SAGAN-style discriminator used by the SKD holistic (adversarial) term.

Zhang et al., "Self-Attention Generative Adversarial Networks" (ICML 2019), as configured by the official
SKD code (Liu et al., CVPR 2019) and reused by CIRKD: spectral-norm conv 4x4/2 + LeakyReLU(0.1) with
widths C -> 64 -> 128 -> 256, self-attention, -> 512, self-attention, conv 4x4 -> 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


def _pad_to_min(x: Tensor, min_size: int) -> Tensor:
    """Zero-pad a (N, C, H, W) map symmetrically so that H, W >= ``min_size``.

    Lets the discriminator run on small score maps (16x16 and below), where the plain SAGAN stack would
    shrink a side to zero; maps that are large enough are returned unchanged.
    """
    dh, dw = max(0, min_size - x.shape[-2]), max(0, min_size - x.shape[-1])
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


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
    return nn.Sequential(spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.1))


class SAGANDiscriminator(nn.Module):
    """Scores (N, C_in, H, W) maps; returns one score per sample, (N,), the mean of the final score map.

    The SAGAN last conv (4x4, no padding, no spectral norm) yields an (H/16 - 3) x (W/16 - 3) map on large
    inputs; inputs are zero-padded where needed so that no layer shrinks below 1x1.
    """

    def __init__(self, in_channels: int, conv_dim: int = 64) -> None:
        super().__init__()
        d = conv_dim
        self.l1, self.l2, self.l3 = _down(in_channels, d), _down(d, 2 * d), _down(2 * d, 4 * d)
        self.attn1 = SelfAttention(4 * d)
        self.l4 = _down(4 * d, 8 * d)
        self.attn2 = SelfAttention(8 * d)
        self.last = nn.Conv2d(8 * d, 1, 4)

    def score_map(self, x: Tensor) -> Tensor:
        """The final (N, 1, h, w) score map before pooling."""
        for layer in (self.l1, self.l2, self.l3):
            x = layer(_pad_to_min(x, 2))
        x = self.attn1(x)
        x = self.attn2(self.l4(_pad_to_min(x, 2)))
        return self.last(_pad_to_min(x, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.score_map(x).mean(dim=(1, 2, 3))
