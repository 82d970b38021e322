"""ESPNet-C and ESPNet (Mehta et al., ECCV 2018, "ESPNet: Efficient Spatial Pyramid of Dilated Convolutions
for Semantic Segmentation"), students of Structured KD (Liu et al., CVPR 2019).

ESP module (paper section 3.1, Fig. 1-2), input (N, M, H, W) -> output (N, N_out, H', W'):

    r = conv(M -> d, 1x1 stride 1, or 3x3 stride 2 when down-sampling)       d = N_out // 5 (reduce)
    b_k = conv3x3(r, dilation 2^(k-1)), k = 1..5; b_1 gets N_out - 4d channels (split + transform)
    y = cat[b_1, b_2, b_2 + b_3, b_2 + b_3 + b_4, b_2 + ... + b_5]           (hierarchical feature fusion)
    y = PReLU(BN(x + y)) with the residual x only when M == N_out and no down-sampling.

ESPNet-C (paper Fig. 4c, alpha_2 = p, alpha_3 = q): level 1 conv3x3/2 (3 -> 16) + BN + PReLU, concatenated
with the image average-pooled to 1/2; a down-sampling ESP (19 -> 64), p ESP(64, 64), concatenation with the
down-sampling ESP's output and the image at 1/4 (131 channels); a down-sampling ESP (131 -> 128), q
ESP(128, 128), concatenation with the down-sampling output (256 channels), 1x1 classifier: logits at 1/8.
ESPNet (Fig. 4d) keeps the encoder and adds a light decoder: the 1/8 class map (1x1 conv 256 -> K, BN,
transposed conv x2), concatenated with a 1x1 projection (131 -> K) of the 1/4 map, BN-PReLU, an ESP
(2K -> K, no residual), transposed conv x2 + BN-PReLU, concatenated with the 1/2 map (19 channels),
conv3x3-BN-PReLU (K + 19 -> K) and a final transposed conv x2: logits at full resolution.

The authors' repository holds two decoders: ``train/Model.py`` concatenates the 19-channel 1/2 map (the
level-1 conv output with the pooled image, after BN-PReLU) -- option ``skip="level1_cat"``, the default --
while ``test/Model.py`` and the released ESPNet weights concatenate the 16-channel level-1 conv output
itself (``conv`` takes K + 16 channels) -- option ``skip="level1"``; then ``stages`` starts with that
16-channel map.

Checked against the authors' code (sacmehta/ESPNet ``train/Model.py``): the same layers, BatchNorm eps 1e-3,
PReLU with one slope per channel, bias-free convs; the image pyramid is average pooling 3x3 / 2 (padding
1). Parameter counts equal theirs (19 classes, p=2, q=8: ESPNet-C 349,193, ESPNet 363,462 with
``train/Model.py``, 362,949 with ``test/Model.py``; tests pin them). Module names are theirs, so their
state dicts load key for key (:func:`authors_to_segkd`). Their released p=2, q=8 models were loaded
this way once, outside the repository (the weights are not redistributed): ESPNet-C and ESPNet Cityscapes
(20 classes: the ignore label counted as a class; ESPNet with ``skip="level1"``) and ESPNet CamVid (12
classes, ``skip="level1_cat"``) give logits identical to the authors' classes (max |diff| 0.0 on a
2x3x64x128 input, CPU float32). One deliberate difference: where a x2 transposed conv does not reproduce
the skip connection's size (input sides not multiples of 8, where the authors' code fails), it is
bilinearly resized to that size.

Named outputs: ``stages`` = [1/2 (19 ch), 1/4 (131 ch), 1/8 (256 ch)]; ``feat`` = the 256-channel 1/8
encoder output (the last map before the class space) for both networks; ``logits`` at 1/8 (ESPNet-C,
``output_stride`` 8) or at the input size (ESPNet, ``output_stride`` 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segkd.models.multistage import MultiStageSegmentor

BN_EPS = 1e-3
DILATIONS = (1, 2, 4, 8, 16)


class Conv(nn.Module):
    """Bias-free k x k conv, 'same' padding (x dilation); a wrapper so keys read ``<name>.conv.weight``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        pad = (kernel - 1) // 2 * dilation
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, dilation=dilation, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class BNPReLU(nn.Module):
    """BatchNorm (eps 1e-3) then a per-channel PReLU: ``bn``, ``act``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.act = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(x))


class ConvBNPReLU(BNPReLU):
    """conv k x k (no bias) - BN - PReLU: ``conv``, ``bn``, ``act``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(c_out)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class ESPModule(nn.Module):
    """The ESP module (module docstring): reduce ``c1``, branches ``d1 .. d16``, hierarchical fusion.

    ``downsample``: ``c1`` is a 3x3 stride-2 conv and the output norm is ``bn`` + ``act`` directly (the
    authors' ``DownSamplerB``); otherwise ``c1`` is 1x1 and the norm is ``bn.bn`` + ``bn.act``, with the
    residual ``x + y`` when ``residual`` (their ``DilatedParllelResidualBlockB``).
    x (N, c_in, H, W) -> (N, c_out, H/s, W/s), s = 2 when down-sampling.
    """

    def __init__(self, c_in: int, c_out: int, downsample: bool = False, residual: bool = True) -> None:
        super().__init__()
        d = c_out // 5
        self.c1 = Conv(c_in, d, 3, stride=2) if downsample else Conv(c_in, d, 1)
        for rate in DILATIONS:
            setattr(self, f"d{rate}", Conv(d, c_out - 4 * d if rate == 1 else d, 3, dilation=rate))
        self.downsample = downsample
        self.residual = residual and not downsample and c_in == c_out
        if downsample:
            self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
            self.act = nn.PReLU(c_out)
        else:
            self.bn = BNPReLU(c_out)

    def forward(self, x: Tensor) -> Tensor:
        reduced = self.c1(x)
        branches = [getattr(self, f"d{rate}")(reduced) for rate in DILATIONS]
        fused = [branches[0]]
        for branch in branches[1:]:
            fused.append(branch if len(fused) == 1 else fused[-1] + branch)
        y = torch.cat(fused, dim=1)
        if self.residual:
            y = x + y
        return self.act(self.bn(y)) if self.downsample else self.bn(y)


class ImagePyramid(nn.Module):
    """The input image average-pooled ``times`` times (3x3, stride 2, padding 1): ``pool.i``."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.pool = nn.ModuleList(nn.AvgPool2d(3, stride=2, padding=1) for _ in range(times))

    def forward(self, x: Tensor) -> Tensor:
        for pool in self.pool:
            x = pool(x)
        return x


class ESPNetEncoder(nn.Module):
    """The ESPNet-C trunk without its classifier; ``forward(images) -> [l1 (1/2, 19), l2 (1/4, 131),
    l3 (1/8, 256)]`` (the authors' ``output0_cat``, ``output1_cat``, ``output2_cat``), preceded by the
    level-1 conv output (1/2, 16, their ``output0``) when ``raw_level1``."""

    def __init__(self, p: int = 2, q: int = 8, raw_level1: bool = False) -> None:
        super().__init__()
        self.raw_level1 = raw_level1
        self.level1 = ConvBNPReLU(3, 16, 3, stride=2)
        self.sample1 = ImagePyramid(1)
        self.sample2 = ImagePyramid(2)
        self.b1 = BNPReLU(16 + 3)
        self.level2_0 = ESPModule(16 + 3, 64, downsample=True)
        self.level2 = nn.ModuleList(ESPModule(64, 64) for _ in range(p))
        self.b2 = BNPReLU(128 + 3)
        self.level3_0 = ESPModule(128 + 3, 128, downsample=True)
        self.level3 = nn.ModuleList(ESPModule(128, 128) for _ in range(q))
        self.b3 = BNPReLU(256)
        self.channels = [16, 19, 131, 256] if raw_level1 else [19, 131, 256]

    @staticmethod
    def _chain(x: Tensor, layers: nn.ModuleList) -> Tensor:
        for layer in layers:
            x = layer(x)
        return x

    def forward(self, images: Tensor) -> list[Tensor]:
        level1 = self.level1(images)
        l1 = self.b1(torch.cat([level1, self.sample1(images)], dim=1))
        down2 = self.level2_0(l1)
        l2 = self.b2(torch.cat([self._chain(down2, self.level2), down2, self.sample2(images)], dim=1))
        down3 = self.level3_0(l2)
        l3 = self.b3(torch.cat([down3, self._chain(down3, self.level3)], dim=1))
        return [level1, l1, l2, l3] if self.raw_level1 else [l1, l2, l3]


class ESPNetCHead(nn.Module):
    """ESPNet-C's classifier: 1x1 conv (no bias) 256 -> K on the 1/8 map; ``feat`` = that map."""

    def __init__(self, num_classes: int, in_channels: int = 256) -> None:
        super().__init__()
        self.feat_channels = in_channels
        self.classifier = nn.Conv2d(in_channels, num_classes, 1, bias=False)

    def forward(self, stages: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return self.classifier(stages[-1]), stages[-1]


def _up2(num_classes: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(num_classes, num_classes, 2, stride=2, bias=False)


def _fit(x: Tensor, like: Tensor) -> Tensor:
    """``x`` resized (bilinear) to ``like``'s size when they differ (only for sides not multiple of 8)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class ESPNetDecoder(nn.Module):
    """ESPNet's light decoder (module docstring); names as in the authors' ``ESPNet`` class, with their
    ``encoder.classifier`` here ``project_l3``. ``forward(stages) -> (logits (N, K, H, W), feat l3)``; the
    1/2 skip is ``stages[0]`` (19 channels, or the raw 16-channel level-1 output, ``skip_channels=16``)."""

    def __init__(self, num_classes: int, skip_channels: int = 19) -> None:
        super().__init__()
        k = num_classes
        self.feat_channels = 256
        self.project_l3 = nn.Conv2d(256, k, 1, bias=False)
        self.level3_C = Conv(128 + 3, k, 1)
        self.br = nn.BatchNorm2d(k, eps=BN_EPS)
        self.conv = ConvBNPReLU(skip_channels + k, k, 3)
        self.up_l3 = nn.Sequential(_up2(k))
        self.combine_l2_l3 = nn.Sequential(BNPReLU(2 * k), ESPModule(2 * k, k, residual=False))
        self.up_l2 = nn.Sequential(_up2(k), BNPReLU(k))
        self.classifier = _up2(k)

    def forward(self, stages: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        l1, l2, l3 = stages[0], stages[-2], stages[-1]
        low = self.level3_C(l2)
        up3 = _fit(self.up_l3(self.br(self.project_l3(l3))), low)
        up2 = _fit(self.up_l2(self.combine_l2_l3(torch.cat([low, up3], dim=1))), l1)
        return self.classifier(self.conv(torch.cat([up2, l1], dim=1))), l3


SKIPS = {"level1_cat": 19, "level1": 16}


def build_espnet(
    num_classes: int,
    *,
    decoder: bool,
    p: int = 2,
    q: int = 8,
    skip: str = "level1_cat",
    output_stride: int = 8,
    name: str = "",
) -> MultiStageSegmentor:
    """ESPNet-C (``decoder=False``) or ESPNet; p, q = the paper's alpha_2, alpha_3 (released: p=2, q=3/5/8);
    ``skip``: ``level1_cat`` (authors' ``train/Model.py``) or ``level1`` (``test/Model.py``, the released
    weights)."""
    if output_stride != 8:
        raise ValueError(f"{name}: the ESPNet encoder has a fixed output stride of 8, got {output_stride}")
    if skip not in SKIPS:
        raise ValueError(f"{name}: skip must be one of {sorted(SKIPS)}, got {skip!r}")
    if decoder and num_classes < 5:
        raise ValueError(f"{name}: the decoder's ESP module splits K channels into 5 branches; needs K >= 5")
    raw = decoder and skip == "level1"
    encoder = ESPNetEncoder(p, q, raw_level1=raw)
    head = ESPNetDecoder(num_classes, SKIPS[skip]) if decoder else ESPNetCHead(num_classes)
    return MultiStageSegmentor(encoder, head, num_classes, encoder.channels, 1 if decoder else 8, name=name)


def authors_to_segkd(state: Mapping[str, Tensor], decoder: bool) -> dict[str, Tensor]:
    """Rename a state dict of the authors' ``ESPNet_Encoder`` (``decoder=False``) or ``ESPNet`` to segkd keys:
    ``classifier.conv.*`` -> ``head.classifier.*`` (ESPNet-C); ``encoder.classifier.conv.*`` ->
    ``head.project_l3.*``, ``encoder.*`` -> ``backbone.*`` and the decoder's keys -> ``head.*`` (ESPNet)."""
    out = {}
    for key, value in state.items():
        if not decoder:
            new = (
                "head.classifier." + key[len("classifier.conv.") :]
                if key.startswith("classifier.")
                else ("backbone." + key)
            )
        elif key.startswith("encoder.classifier.conv."):
            new = "head.project_l3." + key[len("encoder.classifier.conv.") :]
        elif key.startswith("encoder."):
            new = "backbone." + key[len("encoder.") :]
        else:
            new = "head." + key
        out[new] = value
    return out
