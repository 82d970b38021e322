"""The dataset contract shared by every segkd dataset, and the image/label file pairs behind the real ones.

A :class:`SegDataset` yields ``{"image": FloatTensor (3, H, W), "label": LongTensor (H, W), "name": str}``
after its transform; labels hold train ids in ``[0, num_classes)`` or ``ignore_index`` (255).
File-based datasets keep only the list of paths in memory and read one pair per ``__getitem__``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from segkd.data.catalog import voc_palette
from segkd.labels import IGNORE_INDEX

# A transform maps (image uint8 HxWx3, label int64 HxW) to (image FloatTensor 3xHxW, label LongTensor HxW).
Transform = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


def default_transform(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-size evaluation transform with ImageNet mean/std, used when a dataset is built without one."""
    from segkd.data.transforms import EvalTransform  # transforms build on this module's types

    return EvalTransform()(image, label)


class SegDataset(Dataset):
    """Base of all segkd datasets (map-style).

    Subclasses set ``class_names`` and implement ``__len__`` and :meth:`load`, which returns the raw sample
    (image uint8 ``(H, W, 3)``, label int64 ``(H, W)`` of train ids / 255, name). ``__getitem__`` applies
    the transform, which turns it into normalised tensors.
    """

    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        class_names: Sequence[str],
        transform: Transform | None = None,
        palette: np.ndarray | None = None,
    ) -> None:
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.transform: Transform = transform or default_transform
        self._palette = palette
        self.problems: list[str] = []  # layout problems found when listing files (non-strict mode)

    @property
    def num_classes(self) -> int:
        """Number of train classes K (labels are in ``[0, K)`` or ``ignore_index``)."""
        return len(self.class_names)

    @property
    def palette(self) -> np.ndarray:
        """``(K, 3)`` uint8 colours for visualisation."""
        if self._palette is None:
            return voc_palette(self.num_classes)
        return self._palette

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """The raw sample ``index``: image uint8 (H, W, 3), label int64 (H, W), name."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        image, label, name = self.load(index)
        image_t, label_t = self.transform(image, label)
        return {"image": image_t, "label": label_t, "name": name}


# ------------------------------------------------------------------------------------------------ file I/O
def read_image(path: Path) -> np.ndarray:
    """Read an RGB image as uint8 ``(H, W, 3)``; unreadable files raise :class:`DatasetError` naming them."""
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from err


def read_label(path: Path) -> np.ndarray:
    """Read a label PNG as raw integer ids ``(H, W)``.

    Palette ("P") PNGs such as VOC's are read as their palette indices, not as colours; 8/16-bit grey PNGs
    as their values. RGB label images are rejected: segkd never guesses a colour -> class mapping.
    """
    try:
        with Image.open(path) as img:
            if img.mode in ("RGB", "RGBA"):
                raise DatasetError(
                    f"label {path} is a colour ({img.mode}) image; expected a single-channel PNG of class ids"
                )
            return np.asarray(img).astype(np.int64)
    except DatasetError:
        raise
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DatasetError(f"cannot read label {path}: {err}") from err


@dataclass(frozen=True)
class LabelMap:
    """Raw label value -> train id, as a lookup table over 0..65535.

    ``valid_raw`` lists every raw value the format may contain; any other value is an error naming the file.
    """

    lut: np.ndarray  # int64 (65536,), -1 marks values that must not occur

    @classmethod
    def identity(cls, num_classes: int) -> LabelMap:
        """Labels already hold train ids ``0..K-1`` and 255 = ignore."""
        return cls.from_dict({k: k for k in range(num_classes)})

    @classmethod
    def from_dict(cls, mapping: dict[int, int], ignored_raw: Sequence[int] = ()) -> LabelMap:
        """``mapping`` raw -> train id; ``ignored_raw`` raw values mapped to 255; 255 always maps to 255."""
        lut = np.full(1 << 16, -1, dtype=np.int64)
        for raw in (*ignored_raw, IGNORE_INDEX):
            lut[raw] = IGNORE_INDEX
        for raw, train_id in mapping.items():
            lut[raw] = train_id
        return cls(lut)

    def __call__(self, raw: np.ndarray, path: Path, num_classes: int) -> np.ndarray:
        """Map ``raw`` to train ids; values outside the format raise :class:`DatasetError` naming ``path``."""
        mapped = self.lut[raw]
        if (mapped < 0).any():
            bad = np.unique(raw[mapped < 0])[:10].tolist()
            raise DatasetError(
                f"label {path} has values {bad} outside [0, {num_classes}) and not the ignore value "
                f"{IGNORE_INDEX}"
            )
        return mapped


@dataclass(frozen=True)
class Sample:
    """One image/label pair on disk."""

    image: Path
    label: Path
    name: str


class FilePairDataset(SegDataset):
    """A dataset of image/label file pairs with a raw-label -> train-id mapping.

    Listing the pairs happens once in ``__init__`` (paths only); reading, size and value checks happen per
    sample in :meth:`load`, so a corrupt file fails with its path when it is used and ``segkd data check``
    can list every problem at once.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        class_names: Sequence[str],
        label_map: LabelMap,
        transform: Transform | None = None,
        palette: np.ndarray | None = None,
    ) -> None:
        super().__init__(class_names, transform, palette)
        self.samples = list(samples)
        self.label_map = label_map

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        sample = self.samples[index]
        image = read_image(sample.image)
        raw = read_label(sample.label)
        if raw.shape != image.shape[:2]:
            raise DatasetError(
                f"image {sample.image} is {image.shape[1]}x{image.shape[0]} but its label {sample.label} is "
                f"{raw.shape[1]}x{raw.shape[0]} (width x height)"
            )
        return image, self.label_map(raw, sample.label, self.num_classes), sample.name
