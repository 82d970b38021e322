"""MobileNetV2Plus (LightNet, linksense/LightNet ``models/mobilenetv2plus.py``), a student of Structured KD
(Liu et al., CVPR 2019, table 1: "MobileNetV2Plus", 8.3M parameters).

Encoder: MobileNetV2 dilated to output stride 8. Stem conv3x3/2 (3 -> 32) + BN + ReLU, then seven stages
of inverted residuals (t, c, n, s, d) = (1,16,1,1,1) (6,24,2,2,1) (6,32,3,2,1) (6,64,4,1,2) (6,96,3,1,4)
(6,160,3,1,8) (6,320,1,1,16); every block has the 1x1 expansion conv, even with t = 1 (unlike the original
MobileNetV2); the first block of a strided stage has stride s and dilation 1, the others dilation d.
Head (x = input, s_i = stage i output):

    f = SCSE(cat[s3, s4, s5, s6, s7, maxpool(maxpool(s1)), maxpool(s2)])     (N, 712, H/8, W/8)
    a = ASPP(f) -> bilinear to H/4                                           (N, 256, H/4, W/4)
    g = SCSE(cat[a, s2, maxpool(s1)])                                        (N, 296, H/4, W/4)
    feat = ABN(conv3x3_dil2(ABN(g)));  logits = conv1x1(feat) (bias)         (N, K, H/4, W/4)

max pools: 3x3, stride 2, ceil mode. SCSE (Roy et al. 2018): x * sigmoid(fc(relu(fc(gap(x))))) (reduction
16) + x * sigmoid(conv1x1(x)). ABN is LightNet's InPlaceABN: BatchNorm then leaky ReLU (slope 0.01),
placed *before* each conv. ASPP (LightNet ``ASPPInPlaceABNBlock``): ABN on the input; image pooling
(global average, 1x1 conv, broadcast), a 1x1 branch and 3x3 branches of dilation 12, 24, 36 (256
channels each, bias-free); ABN, 1x1 conv 1280 -> 256 **with padding 1** (as in LightNet: the map grows by
one pixel per side before the resize to H/4; kept, since the released weights were trained with it),
Dropout2d(0.2). LightNet's upsamplings are ``nn.Upsample(bilinear)`` of PyTorch 0.3, i.e.
``align_corners=True``; its final upsampling to the input size is left to the engine (``output_stride`` 4).
The map sizes equal LightNet's for inputs whose sides are multiples of 8 (the only ones it accepts); for
other sizes the max-pooled maps are bilinearly resized to the map they are concatenated with.

Parameter count equals LightNet's (8,301,113 for 19 classes, test-pinned); module names are LightNet's
apart from the head's containers (:func:`authors_to_segkd`), so a LightNet state dict loads key for key.
Checked once outside the repository against LightNet's class (its InPlaceABN computed as BN + leaky ReLU,
``nn.Upsample`` with ``align_corners=True``): identical logits (max |diff| 0.0, random weights and BN
statistics, 2x3x64x128 input, CPU float32).
``stages`` = the seven stage outputs [s1 .. s7] (16, 24, 32, 64, 96, 160, 320 channels); ``feat`` = the
296-channel map before the classifier.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segkd.models.checkpoints import rename_by_rules
from segkd.models.heads import Resize
from segkd.models.multistage import MultiStageSegmentor

# (expansion t, channels c, blocks n, stride s, dilation d) of the seven stages
STAGES = (
    (1, 16, 1, 1, 1),
    (6, 24, 2, 2, 1),
    (6, 32, 3, 2, 1),
    (6, 64, 4, 1, 2),
    (6, 96, 3, 1, 4),
    (6, 160, 3, 1, 8),
    (6, 320, 1, 1, 16),
)


class ABN(nn.BatchNorm2d):
    """Activated BatchNorm (LightNet's InPlaceABN without the in-place memory trick): BN, leaky ReLU 0.01.

    Same parameters and buffers as ``nn.BatchNorm2d`` (weight, bias, running_mean, running_var).
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(super().forward(x), 0.01)


class InvertedResidual(nn.Module):
    """MobileNetV2 block ``conv`` = [1x1 expand, BN, ReLU6, 3x3 depthwise (stride, dilation), BN, ReLU6,
    1x1 project, BN], plus the input when stride 1 and c_in == c_out."""

    def __init__(self, c_in: int, c_out: int, stride: int, dilation: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(
                hidden, hidden, 3, stride, padding=dilation, dilation=dilation, groups=hidden, bias=False
            ),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2PlusEncoder(nn.Module):
    """``mod1`` (stem) and ``mod2 .. mod8`` (the seven stages, blocks ``block1 ..``); -> [s1 .. s7]."""

    def __init__(self) -> None:
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.mod1 = nn.Sequential(OrderedDict([("conv1", stem)]))
        c_in = 32
        for index, (t, c, n, s, d) in enumerate(STAGES):
            blocks = []
            for j in range(n):
                strided = j == 0 and s == 2
                blocks.append(
                    (f"block{j + 1}", InvertedResidual(c_in, c, s if strided else 1, 1 if strided else d, t))
                )
                c_in = c
            self.add_module(f"mod{index + 2}", nn.Sequential(OrderedDict(blocks)))
        self.channels = [c for _, c, _, _, _ in STAGES]

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.mod1(images)
        stages = []
        for index in range(len(STAGES)):
            x = getattr(self, f"mod{index + 2}")(x)
            stages.append(x)
        return stages


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze & excitation (module docstring), (N, C, H, W) -> same."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.channel_excitation = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )
        self.spatial_se = nn.Sequential(nn.Conv2d(channels, 1, 1, bias=False), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        channel = self.channel_excitation(self.avg_pool(x).view(n, c)).view(n, c, 1, 1)
        return x * channel + x * self.spatial_se(x)


def _named_conv(name: str, c_in: int, c_out: int, kernel: int, dilation: int = 1, padding: int | None = None):
    pad = dilation * (kernel // 2) if padding is None else padding
    conv = nn.Conv2d(c_in, c_out, kernel, padding=pad, dilation=dilation, bias=False)
    return nn.Sequential(OrderedDict([(name, conv)]))


class LightNetASPP(nn.Module):
    """LightNet's ``ASPPInPlaceABNBlock`` (module docstring): (N, C_in, h, w) -> (N, C, h + 2, w + 2)."""

    def __init__(self, in_channels: int, channels: int = 256, rates: Sequence[int] = (12, 24, 36)) -> None:
        super().__init__()
        self.in_norm = ABN(in_channels)
        self.gave_pool = nn.Sequential(
            OrderedDict(
                [
                    ("gavg", nn.AdaptiveAvgPool2d(1)),
                    ("conv1_0", nn.Conv2d(in_channels, channels, 1, bias=False)),
                ]
            )
        )
        self.conv1x1 = _named_conv("conv1_1", in_channels, channels, 1)
        for index, rate in enumerate(rates, start=1):
            setattr(self, f"aspp_bra{index}", _named_conv(f"conv2_{index}", in_channels, channels, 3, rate))
        self.num_rates = len(rates)
        self.aspp_catdown = nn.Sequential(
            OrderedDict(
                [
                    ("norm_act", ABN((len(rates) + 2) * channels)),
                    ("conv_down", nn.Conv2d((len(rates) + 2) * channels, channels, 1, padding=1, bias=False)),
                    ("dropout", nn.Dropout2d(0.2)),
                ]
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.in_norm(x)
        pooled = self.gave_pool(x).expand(-1, -1, *x.shape[-2:])
        branches = [pooled, self.conv1x1(x)]
        branches += [getattr(self, f"aspp_bra{i}")(x) for i in range(1, self.num_rates + 1)]
        return self.aspp_catdown(torch.cat(branches, dim=1))


class MobileNetV2PlusHead(nn.Module):
    """SCSE -> ASPP -> fusion with stages 1-2 -> SCSE -> ABN-conv-ABN -> classifier (module docstring)."""

    def __init__(self, num_classes: int, channels: int = 256) -> None:
        super().__init__()
        fused = channels + STAGES[1][1] + STAGES[0][1]
        self.feat_channels = fused
        self.out_se = SCSE(sum(c for _, c, _, _, _ in STAGES))
        self.aspp = LightNetASPP(sum(c for _, c, _, _, _ in STAGES), channels)
        self.resize = Resize(align_corners=True)
        self.score_se = SCSE(fused)
        self.score = nn.Sequential(
            OrderedDict(
                [
                    ("norm1", ABN(fused)),
                    ("conv1", nn.Conv2d(fused, fused, 3, padding=2, dilation=2, bias=False)),
                    ("norm2", ABN(fused)),
                ]
            )
        )
        self.classifier = nn.Conv2d(fused, num_classes, 1)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)

    def forward(self, stages: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        s1, s2, s3, s4, s5, s6, s7 = stages
        s1_4 = _fit(self.pool(s1), s2)
        pooled = [_fit(self.pool(s1_4), s3), _fit(self.pool(s2), s3)]
        f = self.out_se(torch.cat([s3, s4, s5, s6, s7, *pooled], dim=1))
        a = self.resize(self.aspp(f), s2.shape[-2:])
        feat = self.score(self.score_se(torch.cat([a, s2, s1_4], dim=1)))
        return self.classifier(feat), feat


def _fit(x: Tensor, like: Tensor) -> Tensor:
    """``x`` resized (bilinear) to ``like``'s size when they differ: only for input sides that are not
    multiples of 8, which LightNet rejects; a no-op otherwise."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


def build_mobilenetv2plus(num_classes: int, *, output_stride: int = 8, name: str = "") -> MultiStageSegmentor:
    """MobileNetV2Plus with ``num_classes`` outputs; its encoder is fixed at output stride 8."""
    if output_stride != 8:
        raise ValueError(
            f"{name}: MobileNetV2Plus has a fixed encoder output stride of 8, got {output_stride}"
        )
    encoder = MobileNetV2PlusEncoder()
    return MultiStageSegmentor(
        encoder, MobileNetV2PlusHead(num_classes), num_classes, encoder.channels, 4, name=name
    )


_HEAD_RULES = [
    (r"^(out_se|aspp|score_se)\.0\.", r"head.\1."),
    (r"^score\.norm\.([12])\.", r"head.score.norm\1."),
    (r"^score\.conv\.1\.", "head.score.conv1."),
    (r"^score\.conv\.2\.", "head.classifier."),
    (r"^(mod\d)\.", r"backbone.\1."),
]


def authors_to_segkd(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename LightNet ``MobileNetV2Plus`` keys: ``mod*`` -> ``backbone.mod*``; ``out_se.0`` / ``aspp.0`` /
    ``score_se.0`` -> ``head.out_se`` / ``head.aspp`` / ``head.score_se``; ``score.norm.1|2`` ->
    ``head.score.norm1|2``, ``score.conv.1`` -> ``head.score.conv1``, ``score.conv.2`` ->
    ``head.classifier``."""
    return {rename_by_rules(key, _HEAD_RULES): value for key, value in state.items()}
