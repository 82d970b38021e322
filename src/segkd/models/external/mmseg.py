"""mmsegmentation checkpoints as segkd networks: DeepLabV3 and PSPNet on ResNetV1c-18/50/101 (``-d8``).

An mmseg checkpoint (``{"meta": {...}, "state_dict": {...}}``) is loaded into a segkd :class:`Segmentor`
built to be the same network; every key is mapped and the load is exact (no key left on either side).
Architectures as in mmseg's ``configs/_base_/models/{deeplabv3,pspnet}_r50-d8.py`` and the ``r18-d8`` /
``r101-d8`` configs, ``mmseg/models/backbones/resnet.py`` (``ResNetV1c``), ``models/utils/res_layer.py``,
``decode_heads/{aspp,psp,fcn}_head.py``.

Where the networks are the same (no change needed):

* ResNetV1c = deep stem (3x3 convs 3->32->32->64, stride 2 on the first) + max-pool, no average-pool
  downsampling: timm ``resnet*`` with ``stem_type='deep', stem_width=32`` (timm ``resnet50c``-style).
  ``backbone.stem.{0,1,3,4,6,7}`` -> ``backbone.conv1.{0,1,3,4,6}`` / ``backbone.bn1``; ``layer*`` keep
  their names (``downsample.0/1`` included).
* ``d8`` dilation (strides 1,2,1,1, dilations 1,1,2,4, ``contract_dilation=True``): the first block of
  layer3 / layer4 uses dilation 1 / 2, the others 2 / 4; timm's ``output_stride=8`` ``first_dilation``
  scheme is identical for the Bottleneck 3x3 (ResNet-50/101) and for BasicBlock ``conv1`` (ResNet-18).
* PSPHead: pool scales 1, 2, 3, 6, each avg-pool -> 1x1 ConvModule (C_in -> C_in/4 = ``channels``),
  concatenated after the input, 3x3 ConvModule bottleneck, dropout 0.1, 1x1 ``conv_seg``.
  ``decode_head.psp_modules.i.1.{conv,bn}`` -> ``head.psp.stages.i.{1,2}``.
* FCN auxiliary head (``num_convs=1``, ``concat_input=False``) on layer3: 3x3 ConvModule C_in -> C_in/4,
  ``conv_seg``: ``auxiliary_head.convs.0.{conv,bn}`` / ``conv_seg`` -> ``aux_head.bottleneck.{0,1}`` /
  ``aux_head.classifier``. ``decode_head.bottleneck.{conv,bn}`` / ``conv_seg`` -> ``head.bottleneck.{0,1}``
  / ``head.classifier``. BatchNorm eps 1e-5 on both sides (mmcv's BN/SyncBN defaults).

Where they differ (the variant is built, so the computed function is mmseg's):

* Head widths: mmseg uses ``channels`` 512 for ResNet-50/101 and 128 for ResNet-18 (segkd's DeepLabV3
  default is 256 for ResNet-101); the auxiliary head 256 / 64 as in segkd.
* DeepLabV3 head (:class:`MMSegASPPHead`): the image-pooling branch comes *first* in the concatenation
  (``[pool, 1x1, r12, r24, r36]``) and there is no 1x1 ``project`` + Dropout(0.5) after ASPP: the 3x3
  bottleneck maps 5C -> C directly. ``decode_head.image_pool.1`` -> ``head.aspp.pool.conv.{0,1}``,
  ``decode_head.aspp_modules.i`` -> ``head.aspp.convs.i.{0,1}``.
* ResNet-18 BasicBlock: mmseg's second 3x3 conv is never dilated (``padding=1``), timm's is; the variant
  sets ``conv2`` dilation 1 in every BasicBlock.
* PSP pooled branches are upsampled with ``align_corners=False`` (mmseg configs), segkd's PSPHead uses
  True; the variant switches it. (The DeepLabV3 image-pool branch is 1x1, where both give the same map.)

Not covered: ``-d16`` / multi-grid configs, ResNetV1b / V1d, other heads; they raise a clear error.
The input normalisation of these configs is ImageNet's on RGB (mean 123.675, 116.28, 103.53, std 58.395,
57.12, 57.375 on 0-255), the adapter's default for this source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from timm.models.resnet import BasicBlock
from torch import Tensor, nn

from segkd.models.backbones import timm_backbone
from segkd.models.checkpoints import CheckpointError
from segkd.models.heads import ASPPPooling, ClassifierHead, FCNHead, PSPHead, conv_bn_relu
from segkd.models.segmentor import Segmentor

NAME_PATTERN = re.compile(r"^(deeplabv3|pspnet)_r(18|50|101)(?:-d8)?$")
HEAD_CHANNELS = {18: 128, 50: 512, 101: 512}
ASPP_DILATIONS = (1, 12, 24, 36)

_KEY_RULES = [
    (r"^backbone\.stem\.0\.", "backbone.conv1.0."),
    (r"^backbone\.stem\.1\.", "backbone.conv1.1."),
    (r"^backbone\.stem\.3\.", "backbone.conv1.3."),
    (r"^backbone\.stem\.4\.", "backbone.conv1.4."),
    (r"^backbone\.stem\.6\.", "backbone.conv1.6."),
    (r"^backbone\.stem\.7\.", "backbone.bn1."),
    (r"^backbone\.(layer[1-4]\.)", r"backbone.\1"),
    (r"^decode_head\.image_pool\.1\.conv\.", "head.aspp.pool.conv.0."),
    (r"^decode_head\.image_pool\.1\.bn\.", "head.aspp.pool.conv.1."),
    (r"^decode_head\.aspp_modules\.(\d+)\.conv\.", r"head.aspp.convs.\1.0."),
    (r"^decode_head\.aspp_modules\.(\d+)\.bn\.", r"head.aspp.convs.\1.1."),
    (r"^decode_head\.psp_modules\.(\d+)\.1\.conv\.", r"head.psp.stages.\1.1."),
    (r"^decode_head\.psp_modules\.(\d+)\.1\.bn\.", r"head.psp.stages.\1.2."),
    (r"^decode_head\.bottleneck\.conv\.", "head.bottleneck.0."),
    (r"^decode_head\.bottleneck\.bn\.", "head.bottleneck.1."),
    (r"^decode_head\.conv_seg\.", "head.classifier."),
    (r"^auxiliary_head\.convs\.0\.conv\.", "aux_head.bottleneck.0."),
    (r"^auxiliary_head\.convs\.0\.bn\.", "aux_head.bottleneck.1."),
    (r"^auxiliary_head\.conv_seg\.", "aux_head.classifier."),
]


class MMSegASPP(nn.Module):
    """mmseg's ASPP context: ``cat[pool(x), b_1(x), b_12(x), b_24(x), b_36(x)]``, (N, 5C, h, w).

    pool = global average pool, 1x1 conv-BN-ReLU, upsample; b_1 a 1x1 conv-BN-ReLU; b_r a 3x3 conv-BN-ReLU
    of dilation r. No projection: mmseg's 3x3 bottleneck takes the 5C channels.
    """

    def __init__(self, in_channels: int, channels: int, dilations: Sequence[int] = ASPP_DILATIONS) -> None:
        super().__init__()
        self.pool = ASPPPooling(in_channels, channels)
        self.convs = nn.ModuleList(
            conv_bn_relu(in_channels, channels, 1 if d == 1 else 3, dilation=d) for d in dilations
        )
        self.out_channels = channels * (len(dilations) + 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.pool(x)] + [conv(x) for conv in self.convs], dim=1)


class MMSegASPPHead(ClassifierHead):
    """mmseg ``ASPPHead``: :class:`MMSegASPP` -> 3x3 bottleneck 5C -> C (BN, ReLU, Dropout 0.1) -> 1x1."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 512,
                 dilations: Sequence[int] = ASPP_DILATIONS) -> None:
        aspp = MMSegASPP(in_channels, channels, dilations)
        super().__init__(aspp.out_channels, channels, num_classes)
        self.aspp = aspp

    def context(self, x: Tensor) -> Tensor:
        return self.aspp(x)


def parse_name(name: str) -> tuple[str, int]:
    """``deeplabv3_r50-d8`` -> ("deeplabv3", 50); a clear error for anything else."""
    match = NAME_PATTERN.match(name)
    if match is None:
        raise ValueError(f"mmseg teacher '{name}': supported are deeplabv3_r18-d8, deeplabv3_r50-d8, "
                         "deeplabv3_r101-d8, pspnet_r18-d8, pspnet_r50-d8, pspnet_r101-d8 (ResNetV1c, d8)")
    return match.group(1), int(match.group(2))


def build_mmseg_segmentor(name: str, num_classes: int) -> Segmentor:
    """The segkd network equal to mmseg's ``<head>_r<depth>-d8`` (differences in the module docstring)."""
    head_type, depth = parse_name(name)
    spec = timm_backbone(f"resnet{depth}", output_stride=8, stem_type="deep", stem_width=32)
    for block in spec.module.modules():
        if isinstance(block, BasicBlock):  # mmseg BasicBlock: conv2 is a plain 3x3 (padding 1)
            block.conv2.dilation, block.conv2.padding = (1, 1), (1, 1)
    c_in, channels = spec.stage_channels[-1], HEAD_CHANNELS[depth]
    if head_type == "deeplabv3":
        head: nn.Module = MMSegASPPHead(c_in, num_classes, channels)
    else:
        head = PSPHead(c_in, num_classes, channels)
        head.psp.resize.align_corners = False
    aux = FCNHead(spec.stage_channels[-2], num_classes)
    return Segmentor(spec.module, head, num_classes, spec.stage_channels, 8, aux, name=f"mmseg:{name}")


def mmseg_to_segkd(state: Mapping[str, Tensor], source: str = "state dict") -> dict[str, Tensor]:
    """Rename every key of an mmseg EncoderDecoder state dict; a key no rule covers is an error."""
    out, unknown = {}, []
    for key, value in state.items():
        for pattern, repl in _KEY_RULES:
            new, count = re.subn(pattern, repl, key)
            if count:
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: keys outside the supported mmseg layout (DeepLabV3 / PSPNet on "
                              f"ResNetV1c): {', '.join(unknown[:8])}")
    return out


def split_checkpoint(obj: Any, source: str) -> tuple[dict[str, Tensor], list[str] | None]:
    """(state dict, class names or None) of an mmseg checkpoint (0.x ``meta.CLASSES`` or 1.x
    ``meta.dataset_meta.classes``); a bare state dict is accepted, its class names then unknown."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: not an mmseg checkpoint (got {type(obj).__name__})")
    state = obj.get("state_dict", obj)
    meta = obj.get("meta") or {}
    names = meta.get("CLASSES") or (meta.get("dataset_meta") or {}).get("classes")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    return state, (list(names) if names else None)


def build(cfg: Any, num_classes: int) -> tuple[nn.Module, list[str] | None, str]:
    """(network with the checkpoint's weights, its class names, default feat module) for ``cfg``."""
    from segkd.models.external.common import load_exact, load_weights_only

    if cfg.output_stride != 8:
        raise ValueError(f"mmseg teacher '{cfg.name}': only the d8 (output stride 8) configs are supported")
    if cfg.checkpoint is None:
        return build_mmseg_segmentor(cfg.name, num_classes), cfg.class_names, "head.bottleneck"
    state, names = split_checkpoint(load_weights_only(cfg.checkpoint), str(cfg.checkpoint))
    state = mmseg_to_segkd(state, str(cfg.checkpoint))
    if "head.classifier.weight" not in state:
        raise CheckpointError(f"{cfg.checkpoint}: no decode_head.conv_seg weights")
    model = build_mmseg_segmentor(cfg.name, int(state["head.classifier.weight"].shape[0]))
    load_exact(model, state, f"{cfg.checkpoint} (mmseg {cfg.name})")
    return model, names or cfg.class_names, "head.bottleneck"
