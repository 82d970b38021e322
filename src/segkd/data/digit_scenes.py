"""``digit_scenes``: generated scenes of real handwritten digits (scikit-learn's ``load_digits``).

A second built-in task, of other shapes than :mod:`segkd.data.synthetic`, for checking that a setting
chosen on one task transfers to another. The digits are the 1797 scans of handwritten digits that
scikit-learn ships (the UCI "Optical Recognition of Handwritten Digits" test set: 8x8 pixels, 17 grey
levels, written by 43 people), so every instance of a class has its own handwriting.

A scene is generated like a synthetic one (same generator, texture distribution, noise and cache): a
background of class 0, then 3-7 digits (``max_objects``) painted in order, later ones occluding earlier
ones. Each digit is its 8x8 scan upsampled bilinearly to a square of 20-45 px at 128 px image size
(``object_size``, scaled with the image) at a random position; its stroke (the upsampled ink above
``ink`` of the maximum) gets a random texture and the class ``1 + digit``. Classes: background and the
digits 0-9 (11; ``num_shapes`` keeps the first K digits).

Scans never cross splits: the ``val`` split draws from every fifth scan (360), every other split
(``train``, ``unlabeled``, ...) from the other 1437.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segkd.data.base import Transform
from segkd.data.registry import DATASETS
from segkd.data.synthetic import SyntheticDataset, random_texture

DIGIT_CLASSES = ("background", *(f"digit_{d}" for d in range(10)))
INSTALL_HINT = "the digit_scenes dataset needs scikit-learn: pip install scikit-learn"


@lru_cache(maxsize=1)
def _scans() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: scans (1797, 8, 8) float32 in [0, 1] and their digits (1797,)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


class DigitScenes(SyntheticDataset):
    """Scenes of handwritten digits (see the module docstring); options as :class:`SyntheticDataset`,
    plus ``ink`` (default 0.4: the stroke threshold on the upsampled scan, as a fraction of full ink)."""

    CLASSES = DIGIT_CLASSES

    def __init__(
        self,
        root: str | None = None,
        split: str = "train",
        transform: Transform | None = None,
        ink: float = 0.4,
        **options: Any,
    ) -> None:
        scans, digits = _scans()
        held_out = np.arange(len(digits)) % 5 == 0
        keep = held_out if split == "val" else ~held_out
        self.ink = float(ink)
        # the scans of each digit this split draws from (set before the scenes are generated)
        self._pool = {digit: scans[keep & (digits == digit)] for digit in range(10)}
        super().__init__(root, split, transform, **options)

    def _paint_object(
        self, rng: np.random.Generator, image: np.ndarray, label: np.ndarray, yy: np.ndarray, xx: np.ndarray
    ) -> None:
        """Draw one random handwritten digit with its own texture into ``image``/``label`` (in place)."""
        h, w = label.shape
        cls = int(rng.integers(1, self.num_shapes + 1))
        scans = self._pool[cls - 1]
        scan = scans[int(rng.integers(len(scans)))]
        size = max(8, int(round(rng.uniform(*self.object_size) * self._scale)))
        top, left = int(rng.integers(-size // 4, h - size // 2)), int(rng.integers(-size // 4, w - size // 2))
        ink = F.interpolate(torch.from_numpy(scan)[None, None], size=(size, size), mode="bilinear",
                            align_corners=False)[0, 0].numpy()
        y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + size, h), min(left + size, w)
        if y1 <= y0 or x1 <= x0:
            return
        mask = ink[y0 - top : y1 - top, x0 - left : x1 - left] >= self.ink
        texture = random_texture(rng, yy[y0:y1, x0:x1], xx[y0:y1, x0:x1], self.textured)
        image[y0:y1, x0:x1][mask] = texture[mask]
        label[y0:y1, x0:x1][mask] = cls


DATASETS.add("digit_scenes", DigitScenes)
