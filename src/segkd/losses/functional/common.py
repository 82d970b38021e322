"""Shape helpers shared by the pure distillation functions.

Every helper here is small glue around :func:`torch.nn.functional.interpolate`; they exist so that each
loss aligns tensors the same documented way (and names the offending shapes in its error messages).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def check_same_shape(student: Tensor, teacher: Tensor, what: str) -> None:
    """Raise a ``ValueError`` naming ``what`` unless both tensors have the same shape."""
    if student.shape != teacher.shape:
        raise ValueError(f"{what}: student shape {tuple(student.shape)} != "
                         f"teacher shape {tuple(teacher.shape)}")


def check_rank(x: Tensor, rank: int, what: str) -> None:
    """Raise a ``ValueError`` naming ``what`` unless ``x`` has ``rank`` dimensions."""
    if x.dim() != rank:
        raise ValueError(f"{what}: expected a {rank}-d tensor, got shape {tuple(x.shape)}")


def resize_to(x: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resize a (N, C, H, W) map to ``size`` (no-op when it already has that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def align_to_larger(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinearly upsample whichever of two (N, C, H, W) maps is smaller to the other's size.

    Sizes are compared by pixel count; ties with different aspect resize the student to the teacher.
    """
    s_size, t_size = tuple(student.shape[-2:]), tuple(teacher.shape[-2:])
    if s_size == t_size:
        return student, teacher
    if s_size[0] * s_size[1] > t_size[0] * t_size[1]:
        return student, resize_to(teacher, s_size)
    return resize_to(student, t_size), teacher


def downsample_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of (N, H, W) integer labels to ``size`` (as the reference code does)."""
    check_rank(labels, 3, "labels")
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    # float round trip: "nearest" lacks integer kernels on some backends; ids < 2**24 are exact.
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def valid_mask(labels: Tensor, num_classes: int) -> Tensor:
    """Boolean (N, h, w) mask of pixels whose label is a class id in ``[0, num_classes)``."""
    return (labels >= 0) & (labels < num_classes)
