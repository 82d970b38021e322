"""Input conventions (:class:`~segkd.config_schema.InputConfig`): normalise an image, undo it, convert
between two conventions, and record one in checkpoint / export metadata.

A convention maps an image's 8-bit RGB values ``u`` to a network input::

    x[c] = (u[src(c)] * pixel_max / 255 - mean[c]) / std[c]      src = (0, 1, 2) for rgb, (2, 1, 0) for bgr

Conversion from the student's convention ``s`` to a teacher's ``t`` is exact and affine per channel (the
order maps are their own inverses, so the student channel holding the teacher's channel c is
``k = src_s(src_t(c))``)::

    x_t[c] = x_s[k] * (p_t std_s[k]) / (p_s std_t[c]) + (p_t mean_s[k] / p_s - mean_t[c]) / std_t[c]

with ``p`` the conventions' ``pixel_max``. Padding is the one place where a converted teacher input can
differ from the teacher's own pipeline: segkd pads the student's normalised crop with 0 (the student's mean
colour), which the teacher then sees as the student's mean colour in its own convention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from segkd.config_schema import IMAGENET_MEAN, IMAGENET_STD, InputConfig

# The mean the CIRKD, DIST and official SKD training code subtracts from OpenCV's BGR 0-255 images
# (CIRKD 2d8ad0f dataset/cityscapes.py:79, DIST 2418f18 segmentation/dataset/datasets.py:79, SKD ce208e1
# train_and_eval.py:10).
REFERENCE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REFERENCE_BGR_MEAN",
    "InputConversion",
    "conversion",
    "denormalize",
    "describe",
    "from_meta",
    "reference_bgr",
    "to_input",
    "to_meta",
]


def reference_bgr() -> InputConfig:
    """The CIRKD / DIST / official SKD convention: OpenCV's BGR, 0-255, minus :data:`REFERENCE_BGR_MEAN`."""
    return InputConfig(channel_order="bgr", pixel_max=255.0, mean=list(REFERENCE_BGR_MEAN),
                       std=[1.0, 1.0, 1.0])


def source_channels(order: str) -> tuple[int, int, int]:
    """For each input channel, the RGB channel it holds."""
    if order == "rgb":
        return (0, 1, 2)
    if order == "bgr":
        return (2, 1, 0)
    raise ValueError(f"input convention: channel_order must be 'rgb' or 'bgr', got {order!r}")


def _channels(t: Tensor) -> Tensor:
    return t.view(-1, 1, 1)


def to_input(image: Tensor, conv: InputConfig) -> Tensor:
    """RGB image(s) ``(3, H, W)`` or ``(N, 3, H, W)`` with values ``u / 255`` in [0, 1] -> the network input.

    For the default convention this is ``(image - mean) / std`` (torchvision's ``normalize``), bit for bit.
    """
    if conv.channel_order == "bgr":
        image = image.flip(-3)
    if conv.pixel_max != 1.0:
        image = image * conv.pixel_max
    mean = torch.as_tensor(conv.mean, dtype=image.dtype, device=image.device)
    std = torch.as_tensor(conv.std, dtype=image.dtype, device=image.device)
    return (image - _channels(mean)) / _channels(std)


def denormalize(x: Any, conv: InputConfig) -> Any:
    """Inverse of :func:`to_input` for one ``(3, H, W)`` numpy or torch image: RGB ``(3, H, W)`` in [0, 1]
    (not clipped). A tensor is converted on its own device."""
    t = torch.as_tensor(x, dtype=torch.float64)
    mean = torch.as_tensor(conv.mean, dtype=torch.float64, device=t.device)
    std = torch.as_tensor(conv.std, dtype=torch.float64, device=t.device)
    t = (t * _channels(std) + _channels(mean)) / conv.pixel_max
    if conv.channel_order == "bgr":
        t = t.flip(-3)
    return t.numpy() if not isinstance(x, Tensor) else t.to(x.dtype)


@dataclass(frozen=True)
class InputConversion:
    """``x_t[:, c] = x_s[:, index[c]] * scale[c] + shift[c]`` (see the module docstring); applied by
    :class:`segkd.models.input_adapter.InputConverter`."""

    index: tuple[int, int, int]
    scale: tuple[float, float, float]
    shift: tuple[float, float, float]


def conversion(student: InputConfig, teacher: InputConfig) -> InputConversion | None:
    """The exact map from inputs in the ``student`` convention to the ``teacher``'s; None when equal."""
    src_s, src_t = source_channels(student.channel_order), source_channels(teacher.channel_order)
    index = tuple(src_s[src_t[c]] for c in range(3))
    ratio = float(teacher.pixel_max) / float(student.pixel_max)
    scale = tuple(ratio * float(student.std[k]) / float(teacher.std[c]) for c, k in enumerate(index))
    shift = tuple((ratio * float(student.mean[k]) - float(teacher.mean[c])) / float(teacher.std[c])
                  for c, k in enumerate(index))
    if index == (0, 1, 2) and scale == (1.0, 1.0, 1.0) and shift == (0.0, 0.0, 0.0):
        return None
    return InputConversion(index, scale, shift)  # type: ignore[arg-type]


def to_meta(conv: InputConfig) -> dict[str, Any]:
    """Plain data for a checkpoint's ``meta["input"]`` and exported metadata."""
    return {"channel_order": conv.channel_order, "pixel_max": float(conv.pixel_max),
            "mean": [float(v) for v in conv.mean], "std": [float(v) for v in conv.std]}


def from_meta(meta: Mapping[str, Any] | None) -> InputConfig:
    """The convention recorded in a checkpoint's ``meta``: its ``input`` entry, else (checkpoints written
    before conventions were recorded) ``mean`` / ``std`` with RGB in [0, 1], else the default."""
    meta = meta or {}
    recorded = meta.get("input")
    if isinstance(recorded, Mapping):
        return InputConfig(channel_order=str(recorded.get("channel_order", "rgb")),  # type: ignore[arg-type]
                           pixel_max=float(recorded.get("pixel_max", 1.0)),
                           mean=_floats(recorded.get("mean", IMAGENET_MEAN)),
                           std=_floats(recorded.get("std", IMAGENET_STD)))
    return InputConfig(mean=_floats(meta.get("mean", IMAGENET_MEAN)),
                       std=_floats(meta.get("std", IMAGENET_STD)))


def _floats(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values]


def describe(conv: InputConfig) -> str:
    """One line, e.g. ``bgr 0-255, mean [104.008, 116.669, 122.679], std [1, 1, 1]``."""
    scale = "0-255" if conv.pixel_max == 255.0 else "0-1"
    return (f"{conv.channel_order} {scale}, mean [{', '.join(f'{v:g}' for v in conv.mean)}], "
            f"std [{', '.join(f'{v:g}' for v in conv.std)}]")
