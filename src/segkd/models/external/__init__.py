"""Teachers from other toolkits: ``distill.teacher.source: segkd | mmseg | huggingface | torchvision``.

Every source gives a :class:`~segkd.models.external.common.TeacherAdapter` with segkd's named outputs
(``logits`` mapped to the dataset's classes and resized to the student's grid, ``feat`` from a forward
hook on ``distill.teacher.feat_module``). One module per source; each has
``build(cfg, num_classes) -> (network, class names or None, default feat module)``:

* :mod:`.mmseg`: mmsegmentation DeepLabV3 / PSPNet checkpoints on ResNetV1c-18/50/101 (``-d8``),
  rebuilt as segkd networks with an exact key mapping; default feat ``head.bottleneck`` (the 3x3
  bottleneck's output, as ``SegOutput.feat`` of segkd's own models);
* :mod:`.huggingface`: ``AutoModelForSemanticSegmentation`` from a local folder or the hub;
* :mod:`.torchvision_models`: torchvision's DeepLabV3, FCN and LR-ASPP;
* ``segkd``: a segkd model, wrapped only when ``feat_module`` or ``class_map`` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from segkd.config_schema import InputConfig
from segkd.models.external.common import (
    ClassMismatchError,
    TeacherAdapter,
    class_groups,
)
from segkd.models.input_adapter import converter, recorded_convention, teacher_convention

__all__ = ["ClassMismatchError", "TeacherAdapter", "build_external_teacher", "needs_adapter"]


def needs_adapter(cfg: Any) -> bool:
    """True unless the teacher is a plain segkd model (then the builder's usual path is taken)."""
    return cfg.source != "segkd" or cfg.feat_module is not None or cfg.class_map is not None


def _segkd(cfg: Any, num_classes: int) -> tuple[nn.Module, list[str] | None, str]:
    from segkd.models import build_model_from_config

    model = build_model_from_config(cfg, None if cfg.num_classes else num_classes, key="distill.teacher")
    return model, cfg.class_names, "head.bottleneck"


def _source(name: str) -> tuple[Callable[[Any, int], tuple[nn.Module, list[str] | None, str]], Callable]:
    """(build, scores) of a source, imported only when used (transformers is optional)."""
    if name == "segkd" or name == "mmseg":
        from segkd.models.external import mmseg

        build = _segkd if name == "segkd" else mmseg.build
        return build, lambda network, images: network(images)
    if name == "huggingface":
        from segkd.models.external import huggingface

        return huggingface.build, huggingface.scores
    if name == "torchvision":
        from segkd.models.external import torchvision_models

        return torchvision_models.build, torchvision_models.scores
    raise ValueError(
        f"distill.teacher.source: unknown source {name!r} (segkd, mmseg, huggingface, torchvision)")


def _source_convention(cfg: Any) -> InputConfig | None:
    """An external source's own input convention (module docstrings); None for a segkd network."""
    if cfg.source == "segkd":
        return None
    if cfg.source == "huggingface":
        from segkd.models.external.huggingface import preprocessor_stats

        stats = preprocessor_stats(cfg.name)
        if stats is not None:
            return InputConfig(mean=[float(v) for v in stats[0]], std=[float(v) for v in stats[1]])
    return InputConfig()  # ImageNet RGB in [0, 1]


def build_external_teacher(
    cfg: Any, num_classes: int, class_names: Sequence[str] | None = None, output_stride: int = 8,
    student_input: InputConfig | None = None,
) -> TeacherAdapter:
    """The teacher of ``cfg`` (a :class:`~segkd.config_schema.TeacherConfig`) as a frozen adapter.

    ``num_classes`` / ``class_names``: the dataset's; ``output_stride``: the student's; ``student_input``:
    the student's input convention (default ImageNet RGB), converted to the teacher's
    (:func:`segkd.models.input_adapter.teacher_convention`). Raises :class:`ClassMismatchError` when the
    teacher's classes differ and ``cfg.class_map`` is not given.
    """
    build, scores = _source(cfg.source)
    network, teacher_names, default_feat = build(cfg, num_classes)
    network.requires_grad_(False)
    network.eval()
    teacher_k = _count_classes(network, teacher_names, num_classes)
    who = f"{cfg.source} teacher '{cfg.name}'"
    groups = class_groups(teacher_names, teacher_k, class_names, num_classes, cfg.class_map, who)
    student = student_input or InputConfig()
    recorded = recorded_convention(getattr(network, "checkpoint_meta", None))
    convert = converter(student, teacher_convention(cfg, student, recorded, _source_convention(cfg)))
    name = f"{cfg.source}:{cfg.name}" if cfg.source != "segkd" else cfg.name
    adapter = TeacherAdapter(network, scores, cfg.feat_module or default_feat, num_classes, groups,
                             output_stride, convert, name=name)
    return adapter.eval()


def _count_classes(network: nn.Module, names: Sequence[str] | None, default: int) -> int:
    """The teacher's own class count: its ``num_classes`` / ``config.num_labels``, else its names."""
    config = getattr(network, "config", None)
    for value in (getattr(network, "num_classes", None), getattr(config, "num_labels", None)):
        if isinstance(value, int):
            return value
    if names is not None:
        return len(names)
    return _probe_classes(network, default)


def _probe_classes(network: nn.Module, default: int) -> int:
    """Class count of a torchvision model from its last classifier conv."""
    convs = [m for n, m in network.named_modules() if isinstance(m, nn.Conv2d) and n.startswith("classifier")]
    return int(convs[-1].out_channels) if convs else default

