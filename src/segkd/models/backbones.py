"""Backbones: any timm model as a multi-stage feature extractor, plus a tiny dependency-free CNN.

A backbone is an ``nn.Module`` whose forward maps images (N, 3, H, W) to a list of stage features,
shallow to deep; the builder reports the channel count of each stage (:class:`BackboneSpec`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import timm
from torch import Tensor, nn

# timm keywords that make timm read a weights file itself (``load_checkpoint`` / its pretrained loader);
# segkd reads such files only through segkd.checkpoint_io (model.pretrained=FILE, model.checkpoint=FILE).
FILE_LOADING_TIMM_KWARGS = ("checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay")


@dataclass
class BackboneSpec:
    """A built backbone with its stage channels (shallow to deep) and total stride at 1x dilation."""

    module: nn.Module
    stage_channels: list[int]


def _stage_indices(name: str, num_stages: int, kwargs: dict[str, Any]) -> tuple[int, ...]:
    """The last ``num_stages`` feature levels timm offers for ``name`` (queried on the meta device)."""
    import torch

    try:
        with torch.device("meta"):
            probe = timm.create_model(name, features_only=True, pretrained=False, **kwargs)
    except TypeError as err:  # a misspelt model.options.timm_kwargs key
        raise ValueError(f"timm model '{name}' rejects the arguments {kwargs} (model.options.timm_kwargs, "
                         f"model.output_stride): {err}") from None
    levels = len(probe.feature_info)
    return tuple(range(max(levels - num_stages, 0), levels))


def timm_backbone(
    name: str,
    output_stride: int = 8,
    pretrained: bool = False,
    num_stages: int = 4,
    **timm_kwargs: Any,
) -> BackboneSpec:
    """A timm ``features_only`` model returning its last ``num_stages`` feature levels.

    ``output_stride`` 8 or 16 makes timm replace the strides of the deepest stages by dilation; for
    ResNets the first block of a dilated stage keeps the previous dilation (timm's ``first_dilation``),
    which is the scheme of the reference ResNetV1b (``dilation=1, previous_dilation=2`` in layer3).
    ``pretrained=True`` downloads through timm's own hub mechanism.
    """
    refuse_file_loading(timm_kwargs)
    kwargs = dict(timm_kwargs)
    if output_stride != 32:
        kwargs["output_stride"] = output_stride
    indices = _stage_indices(name, num_stages, kwargs)
    model = timm.create_model(name, features_only=True, pretrained=pretrained, out_indices=indices, **kwargs)
    return BackboneSpec(model, list(model.feature_info.channels()))


def refuse_file_loading(timm_kwargs: dict[str, Any]) -> None:
    """ValueError (one line) when ``timm_kwargs`` would have timm load a weights file itself."""
    for key in FILE_LOADING_TIMM_KWARGS:
        if key in timm_kwargs:
            raise ValueError(
                f"options.timm_kwargs.{key} (model.options / distill.teacher.options): segkd does not let "
                "timm read weight files; give ImageNet weights as model.pretrained=FILE or the whole "
                "model's as model.checkpoint=FILE, both read by segkd's weights-only reader"
            )


class TinyBackbone(nn.Module):
    """A few conv-BN-ReLU layers per stage: millisecond forward, no download, same stage contract.

    Stage i (i = 0..3) reduces the resolution by 2 (stem included in stage 0, which is at 1/4) until the
    output stride is reached; deeper stages dilate instead (dilation doubles where a stride is dropped),
    the first conv of a dilated stage keeping the previous dilation like timm / ResNetV1b.
    """

    def __init__(
        self,
        channels: Sequence[int] = (8, 16, 24, 32),
        output_stride: int = 8,
        depth: int = 1,
        kernel_sizes: Sequence[int] = (3, 3, 3, 3),
        stem_channels: int = 8,
    ) -> None:
        super().__init__()
        if output_stride not in (4, 8, 16, 32):
            raise ValueError(f"TinyBackbone: output_stride must be 4, 8, 16 or 32, got {output_stride}")
        self.stem = _conv_bn_relu(3, stem_channels, 3, stride=2)
        stages, c_in, stride, dilation = [], stem_channels, 2, 1
        for c_out, k in zip(channels, kernel_sizes):
            first_dilation = dilation
            if stride * 2 <= output_stride:
                step, stride = 2, stride * 2
            else:
                step, dilation = 1, dilation * 2  # keep the resolution, widen the receptive field instead
            layers = [_conv_bn_relu(c_in, c_out, k, stride=step, dilation=first_dilation)]
            layers += [_conv_bn_relu(c_out, c_out, k, dilation=dilation) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.channels = list(channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def _conv_bn_relu(c_in: int, c_out: int, k: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    dilation = dilation if k > 1 else 1
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=dilation * (k // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def tiny_backbone(output_stride: int = 8, **options: Any) -> BackboneSpec:
    """:class:`TinyBackbone` wrapped as a :class:`BackboneSpec`."""
    module = TinyBackbone(output_stride=output_stride, **options)
    return BackboneSpec(module, module.channels)
