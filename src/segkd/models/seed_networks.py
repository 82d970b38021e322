"""Registers the networks of the seed papers' own experiments in :data:`~segkd.models.zoo.MODELS`.

* Knowledge Adaptation (He et al., CVPR 2019): teachers ``deeplabv3plus_resnet50`` and
  ``deeplabv3plus_xception41`` (any timm backbone as ``deeplabv3plus_<timm name>``); the student
  ``linear_mobilenetv2`` is registered with the CIRKD networks in :mod:`segkd.models.zoo`.
* Structured KD (Liu et al., CVPR 2019): students ``espnet_c``, ``espnet`` (p=2, q=8 by default; options
  ``p``, ``q``, and for ESPNet ``skip: level1`` to load the authors' released weights) and
  ``mobilenetv2plus``.

Models whose authors released weights in their own layout carry ``authors_to_segkd`` (a key-renaming
function), used by :func:`segkd.models.checkpoints.load_segmentor_checkpoint` with format ``authors``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from segkd.models import deeplabv3plus, espnet, mobilenetv2plus
from segkd.models.multistage import MultiStageSegmentor
from segkd.models.zoo import MODELS, PATTERN_BUILDERS


def _no_pretrained(name: str, pretrained: bool | str) -> None:
    if pretrained:
        raise ValueError(
            f"{name}: no ImageNet backbone weights are wired for this network; load the authors' released "
            "model with model.checkpoint (checkpoint_format: authors) or train from scratch"
        )


def _espnet_factory(name: str, decoder: bool) -> Callable[..., MultiStageSegmentor]:
    def factory(
        num_classes: int,
        *,
        pretrained: bool | str = False,
        output_stride: int = 8,
        aux: bool = False,
        p: int = 2,
        q: int = 8,
        skip: str = "level1_cat",
        **unused: Any,
    ) -> MultiStageSegmentor:
        del aux, unused  # no auxiliary head; head_channels does not apply
        _no_pretrained(name, pretrained)
        model = espnet.build_espnet(
            num_classes, decoder=decoder, p=p, q=q, skip=skip, output_stride=output_stride, name=name
        )
        model.authors_to_segkd = functools.partial(espnet.authors_to_segkd, decoder=decoder)
        return model

    factory.__doc__ = f"{name} (Mehta et al., ECCV 2018), alpha_2 = p, alpha_3 = q; see segkd.models.espnet."
    return factory


def _mobilenetv2plus(
    num_classes: int,
    *,
    pretrained: bool | str = False,
    output_stride: int = 8,
    aux: bool = False,
    **unused: Any,
) -> MultiStageSegmentor:
    """MobileNetV2Plus (LightNet), the SKD student; see segkd.models.mobilenetv2plus."""
    del aux, unused
    _no_pretrained("mobilenetv2plus", pretrained)
    model = mobilenetv2plus.build_mobilenetv2plus(
        num_classes, output_stride=output_stride, name="mobilenetv2plus"
    )
    model.authors_to_segkd = mobilenetv2plus.authors_to_segkd
    return model


def _deeplabv3plus_pattern(backbone: str, num_classes: int, **options: Any) -> MultiStageSegmentor:
    return deeplabv3plus.build_deeplabv3plus(backbone, num_classes, **options)


PATTERN_BUILDERS["deeplabv3plus"] = _deeplabv3plus_pattern
for _name, _factory in deeplabv3plus.NAMED.items():
    MODELS.add(_name, _factory)
MODELS.add("espnet_c", _espnet_factory("espnet_c", decoder=False))
MODELS.add("espnet", _espnet_factory("espnet", decoder=True))
MODELS.add("mobilenetv2plus", _mobilenetv2plus)
