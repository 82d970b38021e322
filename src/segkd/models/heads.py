"""Segmentation heads: DeepLabV3 (ASPP), PSPNet (pyramid pooling), FCN, and a classifier-only head.

Every head ends in the same two parts, named alike so distillation and checkpoint mapping see one layout:

* ``bottleneck``: conv3x3 - BN - ReLU - Dropout(0.1); its output is ``SegOutput.feat``, the pre-classifier
  embedding every feature-distillation paper uses (CIRKD, IFVD, CWD: ``x_feat_after_aspp`` / ``feature``);
* ``classifier``: a 1x1 conv to K classes.

``forward(x) -> (logits, feat)`` with x (N, C_in, h, w), logits (N, K, h, w), feat (N, C_feat, h, w).
The structures (conv orders, bias-free convs before BN, bilinear resizing with ``align_corners=True``)
follow the reference CIRKD code (models/deeplabv3.py, models/pspnet.py at its CVPR'22 version).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segkd.registry import Registry


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    """conv(kxk, 'same' padding, no bias) - BN - ReLU, the unit every head is made of."""
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Resize(nn.Module):
    """Bilinear resize to a given size (a module, so profiling hooks can count interpolation)."""

    def __init__(self, align_corners: bool = True) -> None:
        super().__init__()
        self.align_corners = align_corners

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=self.align_corners)


class ClassifierHead(nn.Module):
    """Shared tail: ``bottleneck`` (conv3x3-BN-ReLU-Dropout(0.1)) then the 1x1 ``classifier``."""

    def __init__(self, bottleneck_in: int, channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.feat_channels = channels
        self.bottleneck = nn.Sequential(*conv_bn_relu(bottleneck_in, channels, 3), nn.Dropout(dropout))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def context(self, x: Tensor) -> Tensor:
        """Context module before the bottleneck (identity for FCN)."""
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.bottleneck(self.context(x))
        return self.classifier(feat), feat


class FCNHead(ClassifierHead):
    """FCN head (also the auxiliary head): conv3x3 C_in -> C (default C_in // 4), BN, ReLU, Dropout, 1x1.

    CIRKD's ``_FCNHead`` on layer3: ResNet-18 256 -> 64, ResNet-101 1024 -> 256 channels.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int | None = None) -> None:
        super().__init__(in_channels, channels or max(in_channels // 4, 1), num_classes)


class ASPPPooling(nn.Module):
    """Image-pooling branch: global average pool, 1x1 conv, BN, ReLU, bilinear upsample (align_corners)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.conv = conv_bn_relu(c_in, c_out, 1)
        self.resize = Resize(align_corners=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.resize(self.conv(self.gap(x)), x.shape[-2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al. 2017, DeepLabV3).

    y = project(cat[b0(x), b_r1(x), b_r2(x), b_r3(x), pool(x)]), with b0 a 1x1 conv branch, b_r a 3x3 conv
    of dilation r (padding r), pool the image-pooling branch, project = 1x1 conv 5C -> C, BN, ReLU,
    Dropout(0.5). x (N, C_in, h, w) -> y (N, C, h, w).
    """

    def __init__(self, in_channels: int, channels: int, rates: Sequence[int] = (12, 24, 36)) -> None:
        super().__init__()
        branches = [conv_bn_relu(in_channels, channels, 1)]
        branches += [conv_bn_relu(in_channels, channels, 3, dilation=r) for r in rates]
        self.convs = nn.ModuleList(branches)
        self.pool = ASPPPooling(in_channels, channels)
        self.project = nn.Sequential(*conv_bn_relu(channels * (len(rates) + 2), channels, 1), nn.Dropout(0.5))

    def forward(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.convs] + [self.pool(x)]
        return self.project(torch.cat(outs, dim=1))


class DeepLabV3Head(ClassifierHead):
    """DeepLabV3 head: ASPP (rates 12, 24, 36 + image pooling) -> bottleneck -> classifier.

    Channels: 256 for ResNet-101, 128 ("lite") for ResNet-18 / MobileNetV2 in the CIRKD benchmark.
    """

    def __init__(
        self, in_channels: int, num_classes: int, channels: int = 256, rates: Sequence[int] = (12, 24, 36)
    ) -> None:
        super().__init__(channels, channels, num_classes)
        self.aspp = ASPP(in_channels, channels, rates)

    def context(self, x: Tensor) -> Tensor:
        return self.aspp(x)


class PyramidPooling(nn.Module):
    """PSPNet pyramid pooling (Zhao et al. 2017): for bins b in (1, 2, 3, 6), avg-pool to b x b, 1x1 conv
    C_in -> C_in/4, BN, ReLU, bilinear upsample (align_corners=True); output cat[x, 4 branches],
    (N, 2 C_in, h, w)."""

    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        reduced = max(in_channels // len(bins), 1)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), *conv_bn_relu(in_channels, reduced, 1)) for b in bins
        )
        self.resize = Resize(align_corners=True)
        self.out_channels = in_channels + reduced * len(bins)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        return torch.cat([x] + [self.resize(stage(x), size) for stage in self.stages], dim=1)


class PSPHead(ClassifierHead):
    """PSPNet head: pyramid pooling -> bottleneck conv3x3 (2 C_in -> C) -> classifier.

    C = 128 for ResNet-18 and 512 for ResNet-101 in the CIRKD benchmark.
    """

    def __init__(
        self, in_channels: int, num_classes: int, channels: int = 512, bins: Sequence[int] = (1, 2, 3, 6)
    ) -> None:
        psp = PyramidPooling(in_channels, bins)
        super().__init__(psp.out_channels, channels, num_classes)
        self.psp = psp

    def context(self, x: Tensor) -> Tensor:
        return self.psp(x)


class LinearHead(nn.Module):
    """Classifier only: a 1x1 conv on the backbone's last stage, no context module and no bottleneck.

    Knowledge Adaptation's student (He et al., CVPR 2019): MobileNetV2 at output stride 16 "without ASPP and
    decoder". ``feat`` is the backbone's last stage itself, (N, C_in, h, w); ``channels`` is ignored.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int | None = None) -> None:
        super().__init__()
        del channels
        self.feat_channels = in_channels
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.classifier(x), x


# Heads by the name used in ``<head>_<backbone>`` model names; args (in_channels, num_classes, channels).
HEADS: Registry[nn.Module] = Registry("head")
HEADS.add("deeplabv3", DeepLabV3Head)
HEADS.add("pspnet", PSPHead)
HEADS.add("fcn", FCNHead)
HEADS.add("linear", LinearHead)
