"""A teacher that takes the student's input: its own input convention, resolved and converted.

The data pipeline prepares every image in the student's convention (``model.input``). A teacher trained
with another one (e.g. a released CIRKD / DIST teacher, which expects OpenCV's BGR 0-255 minus the Caffe
mean, under a student in the ImageNet RGB convention) gets the exact per-channel map of
:func:`segkd.input_convention.conversion` applied first: :class:`InputConverter` inside the teacher
wrapper (:class:`ConvertedTeacher` for a segkd network, the external adapter for the others).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from segkd.config_schema import InputConfig
from segkd.input_convention import InputConversion, conversion, describe, from_meta


class InputConverter(nn.Module):
    """``x_t[:, c] = x_s[:, index[c]] * scale[c] + shift[c]`` on (N, 3, H, W) batches, in the batch's dtype
    (buffers kept in float64, not saved)."""

    def __init__(self, conv: InputConversion) -> None:
        super().__init__()
        self.conversion = conv
        self.permute = conv.index != (0, 1, 2)
        self.register_buffer("index", torch.tensor(conv.index), persistent=False)
        for name in ("scale", "shift"):
            value = torch.tensor(getattr(conv, name), dtype=torch.float64).view(1, 3, 1, 1)
            self.register_buffer(name, value, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.permute:
            x = x.index_select(1, self.index)
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


class ConvertedTeacher(nn.Module):
    """A segkd segmentor fed through an :class:`InputConverter`; every other attribute (``feat_channels``,
    ``aux_head``, ``stages`` ...) is the wrapped network's, so the engine uses it as the network itself."""

    def __init__(self, network: nn.Module, converter: InputConverter) -> None:
        super().__init__()
        self.network = network
        self.convert = converter

    def forward(self, images: Tensor) -> Any:
        return self.network(self.convert(images))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "network" not in modules:
                raise
            return getattr(modules["network"], name)


def recorded_convention(meta: Mapping[str, Any] | None) -> InputConfig | None:
    """The convention a segkd checkpoint's ``meta`` records (``input``, or the older ``mean`` / ``std``);
    None for weights from elsewhere (no meta)."""
    if not meta or not ("input" in meta or "mean" in meta):
        return None
    return from_meta(meta)


def teacher_convention(cfg: Any, student: InputConfig, recorded: InputConfig | None = None,
                       source_default: InputConfig | None = None) -> InputConfig:
    """The teacher's input convention, from ``cfg`` (a :class:`~segkd.config_schema.TeacherConfig`).

    ``distill.teacher.input`` when set (an error when the teacher checkpoint records another one), else
    ``input_mean`` / ``input_std`` (RGB in [0, 1]), else what the checkpoint records (segkd checkpoints),
    else ``source_default`` (an external source's own), else the student's (a segkd teacher trained like
    the student: segkd's behaviour before conventions existed).
    """
    if cfg.input is not None:
        if recorded is not None and recorded != cfg.input:
            raise ValueError(
                f"distill.teacher.input ({describe(cfg.input)}) differs from the input convention the "
                f"teacher checkpoint {cfg.checkpoint} records ({describe(recorded)}); remove "
                "distill.teacher.input to use the recorded one"
            )
        return cfg.input
    if cfg.input_mean is not None or cfg.input_std is not None:
        base = source_default or InputConfig()
        return InputConfig(mean=list(cfg.input_mean or base.mean), std=list(cfg.input_std or base.std))
    return recorded or source_default or student


def converter(student: InputConfig, teacher: InputConfig) -> InputConverter | None:
    """The module converting student inputs for the teacher; None when the conventions are the same."""
    conv = conversion(student, teacher)
    return None if conv is None else InputConverter(conv)
