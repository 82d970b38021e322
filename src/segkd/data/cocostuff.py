"""``cocostuff``: COCO-Stuff-164k, 171 classes (80 things + 91 stuff), 255 = unlabeled.

Layout::

    ROOT/images/{train2017,val2017}/<stem>.jpg
    ROOT/annotations/{train2017,val2017}/<stem>_labelTrainIds.png   (common conversion: 0..170, 255)
                                      or <stem>.png                  (raw stuffthingmaps: 0..181, 255)

Raw ``stuffthingmaps`` store COCO category id - 1 (0..181); the 11 ids COCO never uses are dropped to get
the 171 contiguous train ids, exactly as the usual conversion script does, so no script needs to be run.
Option ``label_type``: ``auto`` (labelTrainIds when present, else raw), ``labelTrainIds`` or ``raw``.
Splits ``train``/``val`` are aliases of ``train2017``/``val2017``.
"""

from __future__ import annotations

from segkd.data.base import FilePairDataset, LabelMap, Transform
from segkd.data.catalog import COCOSTUFF_CLASSES, COCOSTUFF_UNUSED_RAW_IDS
from segkd.data.layout import (
    IMAGE_EXTENSIONS,
    files_by_key,
    finish_listing,
    pair_files,
    require_dir,
    require_root,
)
from segkd.data.registry import DATASETS

LAYOUT = """  ROOT/images/{train2017,val2017}/<stem>.jpg
  ROOT/annotations/{train2017,val2017}/<stem>_labelTrainIds.png   (or raw stuffthingmaps <stem>.png)"""

SPLIT_ALIASES = {"train": "train2017", "val": "val2017"}
SUFFIXES = {"labelTrainIds": "_labelTrainIds.png", "raw": ".png"}


def raw_label_map() -> LabelMap:
    """Raw stuffthingmap id (0..181) -> train id (0..170), skipping the unused ids (-> ignore)."""
    used = [i for i in range(182) if i not in COCOSTUFF_UNUSED_RAW_IDS]
    return LabelMap.from_dict(
        {raw: train for train, raw in enumerate(used)}, ignored_raw=COCOSTUFF_UNUSED_RAW_IDS
    )


class COCOStuffDataset(FilePairDataset):
    """COCO-Stuff-164k (see the module docstring)."""

    def __init__(
        self,
        root: str | None,
        split: str = "train",
        transform: Transform | None = None,
        label_type: str = "auto",
        strict: bool = True,
    ) -> None:
        base = require_root(root, "cocostuff", LAYOUT)
        folder = SPLIT_ALIASES.get(split, split)
        image_dir = require_dir(base / "images" / folder, "cocostuff", LAYOUT)
        label_dir = require_dir(base / "annotations" / folder, "cocostuff", LAYOUT)
        if label_type not in ("auto", *SUFFIXES):
            raise ValueError(f"cocostuff: label_type must be auto, labelTrainIds or raw, got {label_type!r}")
        kind = label_type
        if kind == "auto":
            kind = "labelTrainIds" if any(label_dir.glob("*" + SUFFIXES["labelTrainIds"])) else "raw"
        labels = files_by_key(label_dir, (SUFFIXES[kind],))
        if kind == "raw":  # never pair a raw map with a converted one
            labels = {k: p for k, p in labels.items() if not k.endswith("_labelTrainIds")}
        images = files_by_key(image_dir, IMAGE_EXTENSIONS)
        samples, problems = pair_files(images, labels, str(label_dir / ("{key}" + SUFFIXES[kind])))
        label_map = raw_label_map() if kind == "raw" else LabelMap.identity(len(COCOSTUFF_CLASSES))
        super().__init__(
            finish_listing(samples, problems, strict, image_dir), COCOSTUFF_CLASSES, label_map, transform
        )
        self.problems, self.label_type = problems, kind


DATASETS.add("cocostuff", COCOStuffDataset)
