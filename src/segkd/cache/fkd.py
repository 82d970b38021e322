"""The FKD alternative to replay (Shen & Xing, "A Fast Knowledge Distillation Framework for Visual
Recognition", ECCV 2022): draw a fixed set of R augmented crops per image in advance, store the live
teacher's targets for exactly those crops, and at training time pick one of the R stored crops.

The targets are then exact (up to storage precision), but every image is seen in at most R geometries
for the whole run, while replay draws a fresh scale, crop and flip at every visit. Implemented far
enough to measure it (:mod:`segkd.bench.cache`): the crops' parameters, the storage, the exactness and
the augmentation diversity (distinct geometries and source-image coverage over E epochs).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from segkd.data.transforms import AugmentParams


def crop_window(params: AugmentParams) -> tuple[float, float, float, float]:
    """The crop's window in source-image pixels: (top, left, bottom, right), clipped to the image."""
    (h, w), (sh, sw) = params.source_size, params.scaled_size
    top, left = params.corner
    ch, cw = params.crop_size
    fy, fx = h / sh, w / sw
    return (top * fy, left * fx, min((top + ch) * fy, h), min((left + cw) * fx, w))


def coverage(windows: Iterable[tuple[float, float, float, float]], size: tuple[int, int]) -> float:
    """Fraction of the source image's pixels inside at least one window."""
    covered = torch.zeros(size, dtype=torch.bool)
    for top, left, bottom, right in windows:
        covered[int(top) : int(-(-bottom // 1)), int(left) : int(-(-right // 1))] = True
    return float(covered.float().mean())


def distinct(params: Iterable[AugmentParams]) -> int:
    """Number of distinct geometries (scaled size, corner, flip)."""
    return len({(p.scaled_size, p.corner, p.flipped) for p in params})
