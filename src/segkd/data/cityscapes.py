"""``cityscapes``: the official Cityscapes layout, raw ``labelIds`` mapped to the 19 train ids.

Layout::

    ROOT/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
    ROOT/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png        (official, raw ids 0..33)
                           or <stem>_gtFine_labelTrainIds.png   (pre-converted, 0..18 / 255)

Raw ids map to train ids by the official table (7 road -> 0, ..., 26 car -> 13, 33 bicycle -> 18);
every other id (0 unlabeled, 1 ego vehicle, ...) -> 255. Option ``label_type``: ``auto`` (raw labelIds
when present, else labelTrainIds), ``labelIds`` or ``labelTrainIds``.
"""

from __future__ import annotations

from segkd.data.base import FilePairDataset, LabelMap, Transform
from segkd.data.catalog import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_NUM_IDS,
    CITYSCAPES_PALETTE,
)
from segkd.data.layout import files_by_key, finish_listing, pair_files, require_dir, require_root
from segkd.data.registry import DATASETS

LAYOUT = """  ROOT/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
  ROOT/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png   (or *_gtFine_labelTrainIds.png)"""

SUFFIXES = {"labelIds": "_gtFine_labelIds.png", "labelTrainIds": "_gtFine_labelTrainIds.png"}


def raw_label_map() -> LabelMap:
    """labelId (0..33) -> train id; ids outside the 19 classes -> 255."""
    ignored = [i for i in range(CITYSCAPES_NUM_IDS) if i not in CITYSCAPES_ID_TO_TRAINID]
    return LabelMap.from_dict(CITYSCAPES_ID_TO_TRAINID, ignored_raw=ignored)


class CityscapesDataset(FilePairDataset):
    """Cityscapes fine annotations (see the module docstring)."""

    def __init__(
        self,
        root: str | None,
        split: str = "train",
        transform: Transform | None = None,
        label_type: str = "auto",
        strict: bool = True,
    ) -> None:
        base = require_root(root, "cityscapes", LAYOUT)
        image_dir = require_dir(base / "leftImg8bit" / split, "cityscapes", LAYOUT)
        label_dir = require_dir(base / "gtFine" / split, "cityscapes", LAYOUT)
        if label_type not in ("auto", *SUFFIXES):
            raise ValueError(
                f"cityscapes: label_type must be auto, labelIds or labelTrainIds, got {label_type!r}"
            )
        images = files_by_key(image_dir, ("_leftImg8bit.png",), recursive=True)
        kind = label_type
        if kind == "auto":
            raw = files_by_key(label_dir, (SUFFIXES["labelIds"],), recursive=True)
            kind = "labelIds" if raw else "labelTrainIds"
        labels = files_by_key(label_dir, (SUFFIXES[kind],), recursive=True)
        samples, problems = pair_files(images, labels, str(label_dir / ("{key}" + SUFFIXES[kind])))
        label_map = raw_label_map() if kind == "labelIds" else LabelMap.identity(len(CITYSCAPES_CLASSES))
        super().__init__(
            finish_listing(samples, problems, strict, image_dir),
            CITYSCAPES_CLASSES,
            label_map,
            transform,
            CITYSCAPES_PALETTE,
        )
        self.problems, self.label_type = problems, kind


DATASETS.add("cityscapes", CityscapesDataset)
