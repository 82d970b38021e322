"""Predict, then train: a teacher cache's arg-max labels as ordinary labels of the unlabelled pool.

The offline pseudo-label baseline of semi-supervised segmentation (Naive-Student, Chen et al. ECCV 2020;
Lee 2013's pseudo-label): the teacher labels the unlabelled images once, and the student trains on them
as if they were annotated, with a plain supervised step (no teacher, no distillation term). With
``data.unlabeled.pseudo_labels: DIR`` (a finished ``segkd cache-teacher`` cache of the pool holding the
teacher's ``logits``), the label of pool image i is

    label_i = argmax_c upsample(logits_i)[c]        logits_i: (C, h, w) -> upsampled (C, H, W) -> (H, W)

with ``upsample`` bilinear, align_corners=False (as :class:`~segkd.losses.pseudo_label.PseudoLabelLoss`
upsamples the live teacher's logits), at the source image's size H x W; the image and this label then go
through the training transform together, exactly as an annotated pair would (nearest-neighbour label
resampling, the same crop and flip). Labels already computed are kept in memory (uint8) up to
:data:`MEMO_BYTES`, so a small pool costs what labels read from memory cost; a larger one reads its
cache entry per sample, as label files would be read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segkd.cache.attach import check_pool
from segkd.cache.fingerprint import CacheMismatchError
from segkd.cache.replay import DatasetView
from segkd.cache.store import TeacherCache
from segkd.config_schema import DataConfig

POOL = "unlabeled"  # the cache's pool of data.unlabeled images
MEMO_BYTES = 256 * 2**20  # labels kept in memory (uint8) up to this many bytes


def argmax_label(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """The (H, W) int64 arg-max label of (C, h, w) ``logits`` upsampled bilinearly to ``size`` = (H, W)."""
    up = F.interpolate(logits[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]
    # Channels last before the arg-max: reducing over the strided channel axis took 0.66 ms for a (9, 96,
    # 96) map against 0.07 ms contiguous (2-core CPU), and it runs once per pool image in the training loop.
    # Ties go to the first class either way (torch.argmax).
    return up.permute(1, 2, 0).contiguous().argmax(-1).numpy().astype(np.int64)


class PseudoLabelled(DatasetView):
    """``dataset`` (the unlabelled pool, with its training transform) whose samples carry the teacher's
    arg-max labels from ``cache`` instead of their own (module docstring). Other attributes are the
    wrapped dataset's."""

    def __init__(self, dataset: Any, cache: TeacherCache) -> None:
        self.dataset, self.cache = dataset, cache
        self._memo: dict[int, np.ndarray] = {}
        self._memo_bytes = 0

    def label(self, index: int, name: str, size: tuple[int, int]) -> np.ndarray:
        """The pseudo-label of pool image ``index`` (checked to be the cached image ``name`` of ``size``)."""
        if index in self._memo:
            return self._memo[index].astype(np.int64)
        cached_name, cached_size, maps = self.cache.maps(POOL, index)
        if cached_name != name or tuple(cached_size) != tuple(size):
            raise CacheMismatchError(
                f"pseudo-label cache {self.cache.root}: pool image {index} is '{name}' {size[0]}x{size[1]} "
                f"here but '{cached_name}' {cached_size[0]}x{cached_size[1]} in the cache (other data); "
                "rebuild it with `segkd cache-teacher`"
            )
        label = argmax_label(maps["logits"], size)
        if self._memo_bytes + label.size <= MEMO_BYTES:
            self._memo[index] = label.astype(np.uint8)
            self._memo_bytes += label.size
        return label

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, _, name = self.dataset.load(index)
        label = self.label(index, name, image.shape[:2])
        image_t, label_t = self.dataset.transform(image, label)
        return {"image": image_t, "label": label_t, "name": name}


def pseudo_labelled_pool(dataset: Any, data: DataConfig) -> PseudoLabelled:
    """The pool ``dataset`` labelled from the cache ``data.unlabeled.pseudo_labels``, after checking that
    it holds the teacher's logits for these very images (dataset, classes, data options, count, names,
    every entry's SHA-256); :class:`CacheMismatchError` or the cache's own errors naming what differs."""
    assert data.unlabeled is not None and data.unlabeled.pseudo_labels is not None
    cache_dir, class_names = data.unlabeled.pseudo_labels, list(dataset.class_names)
    cache = TeacherCache(cache_dir)
    if "logits" not in cache.keys:
        raise CacheMismatchError(
            f"pseudo-label cache {cache_dir} holds {', '.join(cache.keys)} but pseudo-labels need the "
            "teacher's logits; write it with a recipe whose terms read logits (e.g. pseudo_label or kd)"
        )
    if len(class_names) > 256:
        raise ValueError(f"pseudo-labels: {len(class_names)} classes do not fit uint8 labels")
    recorded = cache.manifest["fingerprint"]["data"]
    if recorded["dataset"] != data.name or list(recorded["class_names"]) != class_names:
        raise CacheMismatchError(
            f"pseudo-label cache {cache_dir}: written for {recorded['dataset']} {recorded['class_names']}, "
            f"this run trains on {data.name} {class_names}"
        )
    options = {k: data.options[k] for k in sorted(data.options)}
    if recorded["options"] != options:
        raise CacheMismatchError(
            f"pseudo-label cache {cache_dir}: written for data.options {recorded['options']}, this run has "
            f"{options}; rebuild it with `segkd cache-teacher CONFIG`"
        )
    check_pool(cache, POOL, dataset)  # the same images, every entry intact
    return PseudoLabelled(dataset, cache)
