"""``camvid``: the SegNet release of CamVid (360x480), 11 classes, value 11 = void -> ignore.

Layout::

    ROOT/<split>/<name>.png          split in train, val, test
    ROOT/<split>annot/<name>.png     class ids 0..10, 11 = void
"""

from __future__ import annotations

from segkd.data.base import FilePairDataset, LabelMap, Transform
from segkd.data.catalog import CAMVID_CLASSES, CAMVID_PALETTE
from segkd.data.layout import (
    IMAGE_EXTENSIONS,
    files_by_key,
    finish_listing,
    pair_files,
    require_dir,
    require_root,
)
from segkd.data.registry import DATASETS

LAYOUT = """  ROOT/train/*.png  ROOT/trainannot/*.png
  ROOT/val/*.png    ROOT/valannot/*.png
  ROOT/test/*.png   ROOT/testannot/*.png   (labels: 0..10, 11 = void)"""

VOID = 11


class CamVidDataset(FilePairDataset):
    """CamVid as distributed with SegNet (see the module docstring)."""

    def __init__(
        self, root: str | None, split: str = "train", transform: Transform | None = None, strict: bool = True
    ) -> None:
        base = require_root(root, "camvid", LAYOUT)
        image_dir = require_dir(base / split, "camvid", LAYOUT)
        label_dir = require_dir(base / f"{split}annot", "camvid", LAYOUT)
        images = files_by_key(image_dir, IMAGE_EXTENSIONS)
        labels = files_by_key(label_dir, (".png",))
        samples, problems = pair_files(images, labels, str(label_dir / "{key}.png"))
        label_map = LabelMap.from_dict({k: k for k in range(len(CAMVID_CLASSES))}, ignored_raw=[VOID])
        super().__init__(
            finish_listing(samples, problems, strict, image_dir),
            CAMVID_CLASSES,
            label_map,
            transform,
            CAMVID_PALETTE,
        )
        self.problems = problems


DATASETS.add("camvid", CamVidDataset)
