"""DeepLabV3+ (Chen et al., ECCV 2018, "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation") on any timm backbone: ``deeplabv3plus_<timm name>``.

Encoder: the backbone at output stride 16 (or 8) and DeepLabV3's ASPP on its deepest stage (1x1 branch,
three 3x3 branches of dilation r, image pooling, 1x1 projection to 256 channels); rates (6, 12, 18) at
output stride 16 and (12, 24, 36) at 8, as in the paper. Decoder (paper section 3.1, Fig. 2):

    low  = ReLU(BN(conv1x1(stage_stride4)))                 (N, 48, H/4, W/4)
    x    = cat[bilinear_x4(ASPP(stage_last)), low]          (N, 256 + 48, H/4, W/4)
    x    = conv3x3-BN-ReLU-Dropout(0.5)(x)                  (N, 256, H/4, W/4)
    feat = conv3x3-BN-ReLU-Dropout(0.1)(x)                  (N, 256, H/4, W/4)  -> SegOutput.feat
    logits = conv1x1(feat)                                  (N, K, H/4, W/4)    (output stride 4)

The dropout rates and bilinear ``align_corners=True`` are those of the public PyTorch re-implementation
(jfzhang95/pytorch-deeplab-xception, ``decoder.py``); the paper states neither. No auxiliary head (the
paper has none): ``aux=True`` is ignored, as for the CIRKD MobileNetV2 student.

KA's teachers (He et al., CVPR 2019) are the named models ``deeplabv3plus_resnet50`` (timm ``resnet50``,
the standard 7x7-stem ResNet-50) and ``deeplabv3plus_xception41``: timm's ``xception41`` is the
*aligned* Xception-41 of the DeepLab papers (timm ``xception_aligned.py``, a port compatible with the
TensorFlow DeepLab model-zoo weights: entry flow 128/256/728 with stride 2 each, 8 middle-flow blocks of
728, exit flow 728-1024-1024 / 1536-1536-2048, every max-pool replaced by a strided separable conv).
Its stride-4 feature is taken where DeepLab takes it (entry flow block 2, after the second separable conv,
256 channels); timm taps it after that conv's ReLU, the TensorFlow code before it (a ReLU on the
low-level feature is the one known difference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from segkd.models.backbones import timm_backbone
from segkd.models.heads import ASPP, Resize, conv_bn_relu
from segkd.models.multistage import MultiStageSegmentor

ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}
LOW_LEVEL_CHANNELS = 48


class DeepLabV3PlusHead(nn.Module):
    """ASPP on ``stages[-1]`` + the decoder fusing ``stages[0]`` (stride 4); see the module docstring.

    ``forward(stages) -> (logits (N, K, h4, w4), feat (N, C, h4, w4))`` with h4, w4 the size of stages[0].
    """

    def __init__(
        self,
        in_channels: int,
        low_level_channels: int,
        num_classes: int,
        channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
    ) -> None:
        super().__init__()
        self.feat_channels = channels
        self.aspp = ASPP(in_channels, channels, rates)
        self.low_level = conv_bn_relu(low_level_channels, LOW_LEVEL_CHANNELS, 1)
        self.resize = Resize(align_corners=True)
        self.fuse = nn.Sequential(*conv_bn_relu(channels + LOW_LEVEL_CHANNELS, channels, 3), nn.Dropout(0.5))
        self.bottleneck = nn.Sequential(*conv_bn_relu(channels, channels, 3), nn.Dropout(0.1))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, stages: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        low = self.low_level(stages[0])
        context = self.resize(self.aspp(stages[-1]), low.shape[-2:])
        feat = self.bottleneck(self.fuse(torch.cat([context, low], dim=1)))
        return self.classifier(feat), feat


def build_deeplabv3plus(
    backbone: str,
    num_classes: int,
    *,
    pretrained: bool | str = False,
    output_stride: int = 16,
    head_channels: int | None = None,
    aux: bool = False,
    name: str = "",
    timm_kwargs: dict[str, Any] | None = None,
) -> MultiStageSegmentor:
    """``deeplabv3plus_<backbone>``: timm ``backbone`` (its last four feature levels, the first of which
    must be at stride 4) + :class:`DeepLabV3PlusHead`.

    ``pretrained``: True = timm hub weights, a path = a local ImageNet file."""
    del aux  # DeepLabV3+ has no auxiliary head
    spec = timm_backbone(backbone, output_stride, pretrained=pretrained is True, **(timm_kwargs or {}))
    reductions = list(spec.module.feature_info.reduction())
    if reductions[0] != 4:
        raise ValueError(
            f"deeplabv3plus_{backbone}: the decoder needs a stride-4 feature, but the backbone's first level "
            f"is at stride {reductions[0]} (levels at {reductions})"
        )
    head = DeepLabV3PlusHead(
        spec.stage_channels[-1],
        spec.stage_channels[0],
        num_classes,
        head_channels or 256,
        ASPP_RATES[output_stride],
    )
    model = MultiStageSegmentor(
        spec.module,
        head,
        num_classes,
        spec.stage_channels,
        4,
        aux_head=None,
        name=name or f"deeplabv3plus_{backbone}",
    )
    if isinstance(pretrained, str) and pretrained:
        from segkd.models.pretrained import load_backbone_weights

        load_backbone_weights(model.backbone, pretrained)
    return model


def _named(timm_name: str, hub_name: str, doc: str) -> Callable[..., MultiStageSegmentor]:
    def factory(num_classes: int, **options: Any) -> MultiStageSegmentor:
        backbone = hub_name if options.get("pretrained") is True else timm_name
        return build_deeplabv3plus(backbone, num_classes, name=f"deeplabv3plus_{timm_name}", **options)

    factory.__doc__ = doc
    return factory


NAMED = {
    "deeplabv3plus_resnet50": _named(
        "resnet50", "resnet50", "KA teacher: DeepLabV3+ on the standard ResNet-50 (timm resnet50)."
    ),
    "deeplabv3plus_xception41": _named(
        "xception41",
        "xception41.tf_in1k",
        "KA teacher: DeepLabV3+ on DeepLab's aligned Xception-41 (timm xception41, TF ImageNet weights).",
    ),
}
