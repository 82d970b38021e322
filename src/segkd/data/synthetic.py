"""``synthetic``: procedural scenes whose classes are told apart by SHAPE, never by colour.

How a sample is generated (numpy only, on the fly from ``(seed, split, index)``; nothing is cached):

1. A generator ``numpy.random.default_rng([seed, crc32(split), index])``; train and val therefore draw
   different scenes from the same seed, and any sample can be regenerated alone, in any worker.
2. The background (class 0) is filled with a random colour. Every fill, background or object, comes
   from ONE distribution: a colour uniform in ``[0, 1]^3`` (default), or with ``textured=True`` two such
   colours blended by a pattern chosen uniformly among flat, sinusoidal stripes (random period 4-12 px
   and angle), checkerboard (random cell 3-8 px) and a two-wave "blotch" pattern.
3. 3-7 objects (``max_objects``) are painted in order, later ones
   occluding earlier ones. Each has a class 1..8 = a shape (disc, square, triangle, ring, cross,
   stripes = three parallel bars, diamond, L-shape; ``num_shapes`` keeps the first K), a size of
   20-45 px at 128 px image size (``object_size``, scaled with the image), a centre anywhere in the
   image, a small rotation (+-11 degrees, so squares never turn into diamonds) and its own texture.
4. Gaussian pixel noise (sigma 0.04) is added and the image quantised to uint8.

Because colours and textures are identically distributed for all classes, a pixel's class is determined
only by the outline of the object it lies in; the interiors of a disc, a square and a diamond are locally
identical. A network whose receptive field is much smaller than an object (about 3x3) can only guess from
local edge fragments, so it measurably lags a network that sees whole objects (``segkd demo``
measures and reports the gap).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from segkd.data.base import SegDataset, Transform
from segkd.data.registry import DATASETS

SYNTHETIC_CLASSES = (
    "background", "disc", "square", "triangle", "ring", "cross", "stripes", "diamond", "l_shape",
)  # fmt: skip

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _bars(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Three parallel bars centred at v = -0.8, 0, 0.8, half-width 0.2."""
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0) & (np.abs(v - 0.8 * np.round(v / 0.8)) <= 0.2)


def _l_shape(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    vertical = (u >= -0.9) & (u <= -0.3) & (np.abs(v) <= 0.9)
    return vertical | ((np.abs(u) <= 0.9) & (v >= 0.3) & (v <= 0.9))


# Masks in object coordinates (u, v), the object's radius being 1. Index i + 1 = class id.
SHAPES: tuple[Mask, ...] = (
    lambda u, v: u * u + v * v <= 1.0,  # disc
    lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.85,  # square
    lambda u, v: (v <= 0.8) & (1.8 * np.abs(u) <= v + 1.0),  # triangle, apex up
    lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.3),  # ring
    lambda u, v: (
        ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    ),  # cross
    _bars,  # stripes
    lambda u, v: np.abs(u) + np.abs(v) <= 1.1,  # diamond
    _l_shape,  # L-shape
)


def random_texture(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, textured: bool = True
) -> np.ndarray:
    """A float32 ``(*yy.shape, 3)`` texture in [0, 1] from the one distribution shared by all classes.

    With ``textured=False`` every region is a flat random colour (same distribution for every class).
    """
    c1, c2 = rng.uniform(0.0, 1.0, size=(2, 3)).astype(np.float32)
    kind = int(rng.integers(4)) if textured else 0
    if kind == 0:
        t = np.zeros(yy.shape, np.float32)
    elif kind == 1:
        angle, period, phase = rng.uniform(0, np.pi), rng.uniform(4, 12), rng.uniform(0, 2 * np.pi)
        t = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period) + phase)
    elif kind == 2:
        cell = int(rng.integers(3, 9))
        t = ((xx // cell + yy // cell) % 2).astype(np.float32)
    else:
        f1, f2 = rng.uniform(0.05, 0.3, size=2)
        t = 0.5 + 0.25 * (np.sin(xx * f1 + rng.uniform(0, 6.3)) + np.sin(yy * f2 + rng.uniform(0, 6.3)))
    return c1 + (c2 - c1) * t[..., None].astype(np.float32)


class SyntheticDataset(SegDataset):
    """Deterministic procedural shape scenes (see the module docstring for the generation recipe).

    Options: ``num_samples`` (an int, or a mapping split -> count such as ``{train: 32, val: 256}``;
    default 1000 for train, 200 otherwise), ``image_size`` (int or [H, W],
    default 128), ``seed`` (default 0), ``textured`` (default False: flat colours; True adds stripes,
    checkerboards and blotches, a much harder task), ``max_objects`` (default 7), ``num_shapes`` (default
    8: classes background + the first K shapes), ``object_size`` (default [20, 45]: the range of object
    sizes in px at 128 px, scaled with the image), ``cache`` (default False: True generates every
    image/label once, when the dataset is built, and keeps them in memory, so runs sharing the dataset
    object never generate one; augmentation still runs on every access). ``root`` is ignored.
    """

    CLASSES: tuple[str, ...] = SYNTHETIC_CLASSES

    def __init__(
        self,
        root: str | None = None,
        split: str = "train",
        transform: Transform | None = None,
        num_samples: int | dict[str, int] | None = None,
        image_size: int | list[int] = 128,
        seed: int = 0,
        textured: bool = False,
        max_objects: int = 7,
        cache: bool = False,
        num_shapes: int | None = None,
        object_size: list[float] | tuple[float, float] = (20.0, 45.0),
    ) -> None:
        kinds = len(self.CLASSES) - 1
        num_shapes = kinds if num_shapes is None else int(num_shapes)
        if not 1 <= num_shapes <= kinds:
            raise ValueError(f"{type(self).__name__}: num_shapes must be in 1..{kinds}, got {num_shapes}")
        if len(object_size) != 2 or not 0 < object_size[0] <= object_size[1]:
            raise ValueError(f"{type(self).__name__}: object_size must be [min, max] px, got {object_size}")
        super().__init__(self.CLASSES[: num_shapes + 1], transform)
        self.num_shapes, self.object_size = num_shapes, (float(object_size[0]), float(object_size[1]))
        size = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
        if len(size) != 2 or min(size) < 16:
            raise ValueError(
                f"synthetic: image_size must be an int or [H, W] of at least 16, got {image_size}"
            )
        self.height, self.width = int(size[0]), int(size[1])
        if isinstance(num_samples, dict):  # per split, e.g. {train: 32, val: 256}
            num_samples = num_samples.get(split)
        self.num_samples = int(
            num_samples if num_samples is not None else (1000 if split == "train" else 200)
        )
        if self.num_samples <= 0:
            raise ValueError(f"synthetic: num_samples must be positive, got {num_samples}")
        self.split, self.seed = split, int(seed)
        self.textured, self.max_objects = bool(textured), max(3, int(max_objects))
        self._split_key = zlib.crc32(split.encode())
        self._scale = min(self.height, self.width) / 128.0
        # Generated up front (about 2.5 ms per 96 px image on one core): lazily, the first run to draw an
        # image would pay for it inside its timed steps, and a time-matched comparison would charge it.
        self._cache: list[tuple[np.ndarray, np.ndarray, str]] | None = (
            [self._generate(index) for index in range(self.num_samples)] if cache else None
        )

    def __len__(self) -> int:
        return self.num_samples

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        if self._cache is None:
            return self._generate(index)
        image, label, name = self._cache[index]
        return image.copy(), label.copy(), name

    def _generate(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        rng = np.random.default_rng([self.seed, self._split_key, index])
        h, w = self.height, self.width
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        image = random_texture(rng, yy, xx, self.textured)
        label = np.zeros((h, w), dtype=np.int64)
        for _ in range(int(rng.integers(3, self.max_objects + 1))):
            self._paint_object(rng, image, label, yy, xx)
        image += rng.normal(0.0, 0.04, size=image.shape).astype(np.float32)
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return image, label, f"{self.split}_{index:06d}"

    def _paint_object(
        self, rng: np.random.Generator, image: np.ndarray, label: np.ndarray, yy: np.ndarray, xx: np.ndarray
    ) -> None:
        """Draw one random shape with its own texture into ``image``/``label`` (in place)."""
        h, w = label.shape
        cls = int(rng.integers(1, self.num_shapes + 1))
        radius = rng.uniform(*self.object_size) * self._scale / 2.0
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        angle = rng.uniform(-0.2, 0.2)
        reach = int(np.ceil(radius * 1.5))
        top, bottom = max(0, int(cy) - reach), min(h, int(cy) + reach + 1)
        left, right = max(0, int(cx) - reach), min(w, int(cx) + reach + 1)
        by, bx = yy[top:bottom, left:right] - cy, xx[top:bottom, left:right] - cx
        u = (bx * np.cos(angle) + by * np.sin(angle)) / radius
        v = (-bx * np.sin(angle) + by * np.cos(angle)) / radius
        mask = SHAPES[cls - 1](u, v)
        texture = random_texture(rng, yy[top:bottom, left:right], xx[top:bottom, left:right], self.textured)
        image[top:bottom, left:right][mask] = texture[mask]
        label[top:bottom, left:right][mask] = cls


DATASETS.add("synthetic", SyntheticDataset)
