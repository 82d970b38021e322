"""Training and evaluation transforms on (image, label) pairs.

Input: image uint8 ``(H, W, 3)`` RGB and label int64 ``(H, W)`` (numpy, as read from disk).
Output: image FloatTensor ``(3, H', W')`` in the student's input convention (``model.input``:
:func:`segkd.input_convention.to_input`; default ``(x / 255 - mean) / std`` on RGB with ImageNet's
statistics), label LongTensor ``(H', W')``. Training: photometric jitter (optional) -> random scale
(bilinear image, **nearest** label; uniform over ``scale_range`` or on its ``scale_step`` grid) ->
normalise -> pad to the crop size (image 0 = the mean colour, label ``ignore_index``, as the reference
code pads after subtracting its mean) -> random crop -> random horizontal flip, applied identically to
image and label. Evaluation: normalise only (full size).

Randomness comes from torch's global generator, which the train loader re-seeds per sample
(:mod:`segkd.data.loaders`), so augmentation is reproducible given the run seed.
Geometric ops use ``torch.nn.functional`` and photometric ones torchvision's tensor functional API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from segkd.config_schema import DataConfig, InputConfig
from segkd.input_convention import to_input
from segkd.labels import IGNORE_INDEX


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (H, W, 3) -> float (3, H, W) in [0, 1]; int label (H, W) -> int64 (H, W)."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    return img, torch.from_numpy(np.ascontiguousarray(label)).long()


def color_jitter(image: torch.Tensor, strength: float) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor drawn from ``[1-s, 1+s]``."""
    factors = 1.0 + strength * (2.0 * torch.rand(3) - 1.0)
    image = TF.adjust_brightness(image, float(factors[0]))
    image = TF.adjust_contrast(image, float(factors[1]))
    return TF.adjust_saturation(image, float(factors[2])).clamp_(0.0, 1.0)


def resize_pair(
    image: torch.Tensor, label: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize to ``size`` (H, W): image bilinear, label nearest-neighbour (never mixes class ids)."""
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, label


def draw_scale(scale_range: Sequence[float], step: float = 0.0) -> float:
    """A factor drawn uniformly from ``scale_range`` (``step`` 0) or from the grid ``low + k * step``,
    k = 0..n with n = round((high - low) / step) (CIRKD: ``0.5 + random.randint(0, 15) / 10``)."""
    low, high = scale_range
    if step > 0:
        n = round((high - low) / step)
        return low + step * int(torch.randint(0, n + 1, ()))
    return low + (high - low) * float(torch.rand(()))


def random_scale(
    image: torch.Tensor, label: torch.Tensor, scale_range: Sequence[float], step: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize by a factor from :func:`draw_scale`."""
    scale = draw_scale(scale_range, step)
    h, w = label.shape
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return resize_pair(image, label, size) if size != (h, w) else (image, label)


def _window(label: torch.Tensor, size: Sequence[int]) -> tuple[int, int]:
    """The random (top, left) corner of a ``size`` window in ``label`` (as :func:`random_crop` draws it)."""
    h, w = label.shape
    return int(torch.randint(0, h - size[0] + 1, ())), int(torch.randint(0, w - size[1] + 1, ()))


def pad_to(
    image: torch.Tensor, label: torch.Tensor, size: Sequence[int], ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad bottom/right up to at least ``size``: image with 0, label with ``ignore_index``."""
    h, w = label.shape
    pad_h, pad_w = max(size[0] - h, 0), max(size[1] - w, 0)
    if pad_h == 0 and pad_w == 0:
        return image, label
    image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
    label = F.pad(label, (0, pad_w, 0, pad_h), value=ignore_index)
    return image, label


def random_crop(
    image: torch.Tensor, label: torch.Tensor, size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop the same random ``size`` (H, W) window from image and label (both at least that large)."""
    top, left = _window(label, size)
    window = (slice(top, top + size[0]), slice(left, left + size[1]))
    return image[:, window[0], window[1]], label[window]


def random_hflip(
    image: torch.Tensor, label: torch.Tensor, p: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip image and label left-right together with probability ``p``."""
    if float(torch.rand(())) < p:
        return image.flip(-1), label.flip(-1)
    return image, label


@dataclass(frozen=True)
class AugmentParams:
    """The geometry one :meth:`TrainTransform.sample` call drew: the source image's (H, W), its size
    after random scaling (H', W'), the crop's (top, left) corner in the scaled (and padded) image, the
    crop's (h, w) and whether the crop was flipped left-right."""

    source_size: tuple[int, int]
    scaled_size: tuple[int, int]
    corner: tuple[int, int]
    crop_size: tuple[int, int]
    flipped: bool


class TrainTransform:
    """Random scale, pad with ignore, random crop, flip, optional jitter, normalise (see module doc)."""

    def __init__(
        self,
        crop_size: Sequence[int] = (512, 1024),
        scale_range: Sequence[float] = (0.5, 2.0),
        flip: bool = True,
        jitter: float = 0.0,
        convention: InputConfig | None = None,
        ignore_index: int = IGNORE_INDEX,
        scale_step: float = 0.0,
    ) -> None:
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"data.crop_size must be [height, width] > 0, got {list(crop_size)}")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(
                f"data.scale_range must be [low, high] with 0 < low <= high, got {list(scale_range)}"
            )
        if scale_step < 0:
            raise ValueError(f"data.scale_step must be >= 0, got {scale_step}")
        self.crop_size = tuple(int(c) for c in crop_size)
        self.scale_range = tuple(float(s) for s in scale_range)
        self.scale_step = float(scale_step)
        self.flip, self.jitter, self.ignore_index = flip, float(jitter), ignore_index
        self.convention = convention if convention is not None else InputConfig()

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        img, lbl, _ = self.sample(image, label)
        return img, lbl

    def sample(
        self, image: np.ndarray, label: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, AugmentParams]:
        """The augmented pair (the same tensors as ``__call__``, from the same draws of torch's generator)
        and the geometric parameters it sampled, which :mod:`segkd.cache.replay` applies to a teacher's
        cached maps."""
        img, lbl = to_tensors(image, label)
        source = tuple(lbl.shape)
        if self.jitter > 0:
            img = color_jitter(img, self.jitter)
        img, lbl = random_scale(img, lbl, self.scale_range, self.scale_step)
        scaled = tuple(lbl.shape)
        img = to_input(img, self.convention)
        img, lbl = pad_to(img, lbl, self.crop_size, self.ignore_index)
        top, left = _window(lbl, self.crop_size)
        img = img[:, top : top + self.crop_size[0], left : left + self.crop_size[1]]
        lbl = lbl[top : top + self.crop_size[0], left : left + self.crop_size[1]]
        flipped = False
        if self.flip:
            flipped = float(torch.rand(())) < 0.5
            img, lbl = (img.flip(-1), lbl.flip(-1)) if flipped else (img, lbl)
        params = AugmentParams(source, scaled, (top, left), self.crop_size, flipped)  # type: ignore[arg-type]
        return img.contiguous(), lbl.contiguous(), params


class EvalTransform:
    """Full-size evaluation: tensor conversion and normalisation (``convention``; default ImageNet RGB)."""

    def __init__(self, convention: InputConfig | None = None) -> None:
        self.convention = convention if convention is not None else InputConfig()

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        img, lbl = to_tensors(image, label)
        return to_input(img, self.convention), lbl


def build_transforms(
    cfg: DataConfig, train: bool, convention: InputConfig | None = None
) -> TrainTransform | EvalTransform:
    """The training (``train=True``) or full-size evaluation transform described by ``cfg``, producing the
    student's input ``convention`` (``model.input``; None: the default ImageNet RGB convention)."""
    if not train:
        return EvalTransform(convention)
    return TrainTransform(cfg.crop_size, cfg.scale_range, cfg.flip, cfg.color_jitter, convention,
                          scale_step=cfg.scale_step)
