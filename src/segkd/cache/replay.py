"""Replay a cached full-image map through one training sample's augmentation.

:meth:`segkd.data.transforms.TrainTransform.sample` reports the geometry it drew
(:class:`~segkd.data.transforms.AugmentParams`): the source size (H, W), the scaled size (H', W'), the
crop corner (top, left) in the scaled, bottom/right-padded image, the crop size (ch, cw) and the flip.
The live teacher on that crop returns an (oh, ow) map whose output pixel i covers, in the align-corners-
false convention of ``F.interpolate``, the crop row ``(i + 0.5) * ch / oh - 0.5``, i.e. the scaled-image
row ``y' = top + (i + 0.5) * ch / oh - 0.5``. The cached (h, w) map covers the whole source image in the
same convention, so the scaled-image row y' sits at normalised coordinate ``2 (y' + 0.5) / H' - 1`` of the
cached map whatever its resolution (H' = s H and h ~ H / stride cancel). Replay therefore samples the
cached map bilinearly (``F.grid_sample``, align_corners=False) at

    y_n(i) = 2 (top  + (i + 0.5) ch / oh) / H' - 1,     x_n(j) = 2 (left + (j + 0.5) cw / ow) / W' - 1

and flips the result left-right when the crop was flipped. Rows or columns in the padding (past H' or W':
the image there is the mean colour, the label ignore) take the border value (``padding_mode="border"``).
Sampling runs in float64 so that an identity geometry (scale 1, crop = image, no flip) returns the cached
float32 map bit for bit. What replay cannot reproduce: the teacher's response to the crop's borders
(zero padding of its convolutions at the crop edge), to the image content seen at another scale, and to
colour jitter (the teacher saw the un-jittered image); ``segkd bench cache`` measures the resulting KL.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from segkd.cache.fingerprint import CacheMismatchError
from segkd.cache.store import TeacherCache
from segkd.data.transforms import AugmentParams

CACHED_PREFIX = "teacher."  # batch keys of replayed maps: "teacher.logits", "teacher.feat", ...


def replay(value: Tensor, params: AugmentParams, out_size: tuple[int, int]) -> Tensor:
    """The (C, oh, ow) target of a crop from the (C, h, w) map of its full source image (module doc)."""
    (scaled_h, scaled_w), (top, left) = params.scaled_size, params.corner
    (crop_h, crop_w), (oh, ow) = params.crop_size, out_size
    rows = torch.arange(oh, dtype=torch.float64)
    cols = torch.arange(ow, dtype=torch.float64)
    y = 2.0 * (top + (rows + 0.5) * crop_h / oh) / scaled_h - 1.0
    x = 2.0 * (left + (cols + 0.5) * crop_w / ow) / scaled_w - 1.0
    grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)[None]  # (1, oh, ow, 2) as (x, y)
    out = F.grid_sample(value[None].double(), grid, mode="bilinear", padding_mode="border",
                        align_corners=False)[0].to(value.dtype)
    return out.flip(-1) if params.flipped else out


def crop_map_size(cache: TeacherCache, key: str, crop_size: tuple[int, int]) -> tuple[int, int]:
    """Size of the teacher's ``key`` map for a ``crop_size`` input: probed by the writer for the recipe's
    crop size; another crop size scales it by the probed stride (``ceil(crop / stride)``)."""
    probe = cache.manifest["crop_probe"]
    size = tuple(int(v) for v in probe["sizes"][key])
    if tuple(crop_size) == tuple(probe["crop_size"]):
        return size  # type: ignore[return-value]
    strides = [round(c / s) for c, s in zip(probe["crop_size"], size)]
    return math.ceil(crop_size[0] / strides[0]), math.ceil(crop_size[1] / strides[1])


class DatasetView(Dataset):
    """A dataset seen through a wrapper: its length and every attribute the wrapper does not define (class
    names, transform, ``load``) are the wrapped ``dataset``'s."""

    dataset: Any

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not yet set (e.g. during unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)


class CachedTargets(DatasetView):
    """A training dataset whose samples also carry the teacher's cached maps, replayed through the
    sample's own augmentation (``"teacher.<key>"`` entries, float32 (C, oh, ow)).

    The image and label are exactly those of ``dataset[index]`` (same transform, same draws of torch's
    generator, which the loader seeds per sample). Other attributes are the wrapped dataset's.
    """

    def __init__(self, dataset: Any, cache: TeacherCache, pool: str, keys: list[str]) -> None:
        if not hasattr(dataset.transform, "sample"):
            raise TypeError("a teacher cache needs the training transform's sampled geometry "
                            "(TrainTransform.sample)")
        self.dataset, self.cache, self.pool, self.keys = dataset, cache, pool, list(keys)
        crop = tuple(dataset.transform.crop_size)
        self.sizes = {key: crop_map_size(cache, key, crop) for key in self.keys}

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label, name = self.dataset.load(index)
        img, lbl, params = self.dataset.transform.sample(image, label)
        cached_name, size, maps = self.cache.maps(self.pool, index)
        if cached_name != name or tuple(size) != tuple(params.source_size):
            raise CacheMismatchError(
                f"teacher cache {self.cache.root}: {self.pool} sample {index} is '{name}' "
                f"{params.source_size[0]}x{params.source_size[1]} here but '{cached_name}' "
                f"{size[0]}x{size[1]} in the cache (other data); rebuild it with `segkd cache-teacher`"
            )
        sample = {"image": img, "label": lbl, "name": name}
        for key in self.keys:
            sample[CACHED_PREFIX + key] = replay(maps[key], params, self.sizes[key])
        return sample
