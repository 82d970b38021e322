"""Model zoo: the registered segmentors and the ``<head>_<timm name>`` naming scheme.

Fixed names reproduce the CIRKD benchmark networks (REFERENCE section 1); any timm backbone is reachable
as ``deeplabv3_<timm>``, ``pspnet_<timm>``, ``fcn_<timm>``, ``linear_<timm>`` (classifier only) or
``deeplabv3plus_<timm>`` (:mod:`segkd.models.deeplabv3plus`); the seeds' own networks (DeepLabV3+, ESPNet,
MobileNetV2Plus) are registered by :mod:`segkd.models.seed_networks`; ``test_tiny_*`` and ``demo_*`` are small
download-free models for tests and the CPU demo.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import timm

from segkd.models.backbones import BackboneSpec, TinyBackbone, timm_backbone, tiny_backbone
from segkd.models.heads import HEADS, FCNHead
from segkd.models.segmentor import Segmentor
from segkd.registry import Registry, RegistryError

HEAD_TYPES = tuple(HEADS.names())


class ModelRegistry(Registry[Segmentor]):
    """Registry of fixed model names that also resolves ``<head>_<timm model name>`` patterns."""

    def get(self, name: str) -> Callable[..., Segmentor]:
        if name in self._entries:
            return self._entries[name]
        head, _, backbone = name.partition("_")
        if head in HEAD_TYPES and backbone and timm.is_model(backbone):
            return functools.partial(build_timm_segmentor, head, backbone, name=name)
        if head in PATTERN_BUILDERS and backbone and timm.is_model(backbone):
            return functools.partial(PATTERN_BUILDERS[head], backbone, name=name)
        patterns = ", ".join(f"{h}_<timm model name>" for h in (*HEAD_TYPES, *PATTERN_BUILDERS))
        raise RegistryError(
            f"unknown model '{name}'. Valid model names: {', '.join(self.names())}; or the patterns "
            f"{patterns} (e.g. deeplabv3_resnet34, pspnet_efficientnet_b0)"
        )


MODELS = ModelRegistry("model")
# Architectures that are more than a head on the deepest stage (e.g. ``deeplabv3plus``), by name prefix:
# ``builder(timm_name, num_classes, **options)``; filled by the modules that define them.
PATTERN_BUILDERS: dict[str, Callable[..., Segmentor]] = {}

# CIRKD benchmark backbones: timm architecture name + arguments, and the timm hub weights of the same
# architecture (None: timm has no ImageNet weights for it; use a local file).
# ResNet "v1s": deep stem 3x3 convs 64-64-128 then layer1 with 128 inputs (timm stem_type='deep',
# stem_width=64), no average-pool downsampling; timm's resnet50s / resnet101s are exactly this.
CIRKD_BACKBONES: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "resnet18": ("resnet18", {"stem_type": "deep", "stem_width": 64}, None),
    "resnet50": ("resnet50s", {}, "resnet50s"),
    "resnet101": ("resnet101s", {}, "resnet101s"),
    "mobilenetv2": ("mobilenetv2_100", {}, "mobilenetv2_100"),
}


def default_head_channels(head: str, in_channels: int) -> int:
    """Published head widths: DeepLabV3 256 (ResNet-101) / 128 (lite students); PSP 512 / 128; FCN C_in/4."""
    if head == "deeplabv3":
        return 256 if in_channels >= 1024 else 128
    if head == "pspnet":
        return 512 if in_channels >= 1024 else 128
    return max(in_channels // 4, 1)


def check_options(model: str, options: dict[str, Any], target: Callable[..., Any], fixed: set[str]) -> None:
    """Refuse ``model.options`` keys that ``target`` (a backbone or head) does not take; list the valid ones.

    ``fixed`` are ``target``'s parameters the zoo sets itself (``in_channels``, ``num_classes``, ...), which
    are not options. Raises :class:`RegistryError` instead of the ``TypeError`` the call would raise.
    """
    import inspect

    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(target).parameters.values()
    valid = [p.name for p in params if p.kind in named and p.name not in fixed]
    valid += [k for k in ("timm_kwargs",) if k in fixed]  # taken by the zoo itself, still a valid option
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise RegistryError(
            f"model '{model}': unknown option{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} in "
            f"model.options. Valid options: {', '.join(valid) or '(none)'}"
        )


def assemble(
    head: str,
    spec: BackboneSpec,
    num_classes: int,
    output_stride: int,
    head_channels: int | None = None,
    aux: bool = True,
    name: str = "",
    **head_options: Any,
) -> Segmentor:
    """Put a head (and an FCN aux head on the third stage, if ``aux``) on a built backbone."""
    c_last = spec.stage_channels[-1]
    channels = head_channels or default_head_channels(head, c_last)
    main = HEADS.build(head, c_last, num_classes, channels, **head_options)
    aux_head = FCNHead(spec.stage_channels[-2], num_classes) if aux and len(spec.stage_channels) > 1 else None
    return Segmentor(spec.module, main, num_classes, spec.stage_channels, output_stride, aux_head, name=name)


def build_timm_segmentor(
    head: str,
    backbone: str,
    num_classes: int,
    *,
    pretrained: bool | str = False,
    output_stride: int = 8,
    head_channels: int | None = None,
    aux: bool = True,
    name: str = "",
    timm_kwargs: dict[str, Any] | None = None,
    **head_options: Any,
) -> Segmentor:
    """``<head>_<timm name>``: a timm backbone (``features_only``) with the given head.

    ``pretrained=True`` uses timm's hub weights; a path loads a local ImageNet checkpoint into the backbone.
    """
    check_options(name or f"{head}_{backbone}", head_options, HEADS.get(head),
                  {"in_channels", "num_classes", "channels", "timm_kwargs"})
    spec = timm_backbone(backbone, output_stride, pretrained=pretrained is True, **(timm_kwargs or {}))
    model = assemble(head, spec, num_classes, output_stride, head_channels, aux, name=name, **head_options)
    _load_local_pretrained(model, pretrained)
    return model


def _load_local_pretrained(model: Segmentor, pretrained: bool | str) -> None:
    if isinstance(pretrained, str) and pretrained:
        from segkd.models.pretrained import load_backbone_weights

        load_backbone_weights(model.backbone, pretrained)


def _cirkd_factory(head: str, backbone: str, aux_default: bool = True) -> Callable[..., Segmentor]:
    arch, timm_kwargs, hub_name = CIRKD_BACKBONES[backbone]
    name = f"{head}_{backbone}"

    def factory(
        num_classes: int,
        *,
        pretrained: bool | str = False,
        output_stride: int = 8,
        head_channels: int | None = None,
        aux: bool = True,
        **options: Any,
    ) -> Segmentor:
        if pretrained is True and hub_name is None:
            raise ValueError(
                f"{name}: timm has no ImageNet weights for this deep-stem backbone; set model.pretrained to "
                f"a local file (e.g. the reference resnet18-imagenet.pth)"
            )
        extra_timm_kwargs = options.pop("timm_kwargs", {})
        return build_timm_segmentor(
            head,
            hub_name if pretrained is True else arch,
            num_classes,
            pretrained=pretrained,
            output_stride=output_stride,
            head_channels=head_channels,
            aux=aux and aux_default,
            name=name,
            timm_kwargs={**timm_kwargs, **extra_timm_kwargs},
            **options,
        )

    factory.__doc__ = f"{name} as in the CIRKD benchmark (aux head: {aux_default})."
    return factory


for _head, _backbone, _aux in [
    ("deeplabv3", "resnet101", True),
    ("deeplabv3", "resnet50", True),
    ("deeplabv3", "resnet18", True),
    ("deeplabv3", "mobilenetv2", False),  # the released MobileNetV2 student has no auxiliary head
    ("pspnet", "resnet18", True),
    ("pspnet", "resnet101", True),
    ("fcn", "resnet18", True),
    ("linear", "mobilenetv2", False),  # Knowledge Adaptation's student: classifier only, output_stride 16
]:
    MODELS.add(f"{_head}_{_backbone}", _cirkd_factory(_head, _backbone, _aux))


def _tiny_factory(
    name: str, head: str, backbone_options: dict[str, Any], head_channels: int, **head_options: Any
) -> Callable[..., Segmentor]:
    def factory(
        num_classes: int,
        *,
        pretrained: bool | str = False,
        output_stride: int = 8,
        head_channels: int | None = head_channels,
        aux: bool = True,
        **options: Any,
    ) -> Segmentor:
        if pretrained:
            raise ValueError(f"{name} is a test/demo model without pretrained weights")
        check_options(name, options, TinyBackbone, {"output_stride"})
        spec = tiny_backbone(output_stride, **{**backbone_options, **options})
        return assemble(head, spec, num_classes, output_stride, head_channels, aux, name=name, **head_options)

    factory.__doc__ = f"{name}: download-free {head} on a TinyBackbone {backbone_options}."
    return factory


# Tiny models for unit tests: same code paths as the zoo, different feat widths (32 vs 16).
MODELS.add(
    "test_tiny_teacher",
    _tiny_factory("test_tiny_teacher", "deeplabv3", {"channels": (8, 16, 24, 32)}, 32, rates=(1, 2, 3)),
)
MODELS.add(
    "test_tiny_student", _tiny_factory("test_tiny_student", "pspnet", {"channels": (8, 8, 16, 16)}, 16)
)
# CPU demo pair: a dilated teacher with a large receptive field (ASPP rates 2/4/6 at 1/8 resolution; one conv
# per stage: with two it reached 37.8 instead of 60.4 val mIoU in the demo's 2000 iterations) and a shallow
# student whose deep stages are 1x1 convs (receptive field about 31 px). A narrower 5k-parameter student
# (8-16-16-16) reached only ~20 mIoU and every method lowered it further: too little capacity to imitate.
MODELS.add(
    "demo_teacher",
    _tiny_factory(
        "demo_teacher", "deeplabv3", {"channels": (16, 32, 48, 64), "depth": 1}, 48, rates=(2, 4, 6)
    ),
)
MODELS.add(
    "demo_student",
    _tiny_factory("demo_student", "fcn", {"channels": (16, 32, 32, 32), "kernel_sizes": (3, 3, 1, 1)}, 32),
)


def build_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool | str = False,
    output_stride: int = 8,
    head_channels: int | None = None,
    aux: bool = True,
    **options: Any,
) -> Segmentor:
    """Build the registered (or ``<head>_<timm name>``) segmentor ``name`` with ``num_classes`` outputs."""
    if num_classes < 1:
        raise ValueError(f"model {name}: num_classes must be >= 1, got {num_classes}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"model {name}: output_stride must be 8, 16 or 32, got {output_stride}")
    factory = MODELS.get(name)
    kwargs: dict[str, Any] = dict(pretrained=pretrained, output_stride=output_stride, aux=aux, **options)
    if head_channels is not None:
        kwargs["head_channels"] = head_channels
    return factory(num_classes, **kwargs)
