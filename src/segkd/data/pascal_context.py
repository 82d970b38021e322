"""``pascal_context``: PASCAL-Context, the 59 most frequent classes (Mottaghi et al., CVPR 2014), as used by
Knowledge Adaptation (He et al., CVPR 2019) and most segmentation papers.

Layout (the one mmsegmentation documents; ROOT is ``VOC2010``, or a folder holding ``VOC2010`` or
``VOCdevkit/VOC2010``)::

    ROOT/JPEGImages/<id>.jpg
    ROOT/SegmentationClassContext/<id>.png        0 = background (not one of the 59), 1..59 = classes
    ROOT/ImageSets/SegmentationContext/<split>.txt one id per line (train: 4996, val: 5104 images)

Labels: ``0 -> 255`` (ignore) and ``k -> k - 1`` (mmsegmentation's ``PascalContextDataset59``,
``reduce_zero_label=True``); class order and names are mmsegmentation's (alphabetical).
"""

from __future__ import annotations

from pathlib import Path

from segkd.data.base import FilePairDataset, LabelMap, Transform
from segkd.data.layout import finish_listing, pairs_from_ids, require_dir, require_root
from segkd.data.registry import DATASETS
from segkd.data.voc import read_ids

PASCAL_CONTEXT_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building",
    "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog",
    "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike",
    "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor",
    "wall", "water", "window", "wood",
)  # fmt: skip

LAYOUT = """  ROOT/JPEGImages/<id>.jpg
  ROOT/SegmentationClassContext/<id>.png        (0 = background/ignore, 1..59 = classes)
  ROOT/ImageSets/SegmentationContext/<split>.txt (train.txt, val.txt)"""


def find_context_root(base: Path) -> Path:
    """``base`` itself, or ``base/VOC2010`` / ``base/VOCdevkit/VOC2010`` when those hold the data."""
    for candidate in (base, base / "VOC2010", base / "VOCdevkit" / "VOC2010"):
        if (candidate / "SegmentationClassContext").is_dir():
            return candidate
    return base


class PascalContextDataset(FilePairDataset):
    """PASCAL-Context, 59 classes (see the module docstring)."""

    def __init__(
        self, root: str | None, split: str = "train", transform: Transform | None = None, strict: bool = True
    ) -> None:
        base = find_context_root(require_root(root, "pascal_context", LAYOUT))
        image_dir = require_dir(base / "JPEGImages", "pascal_context", LAYOUT)
        label_dir = require_dir(base / "SegmentationClassContext", "pascal_context", LAYOUT)
        list_file = base / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(
                f"pascal_context: split list not found: {list_file}\nExpected layout:\n{LAYOUT}"
            )
        samples, problems = pairs_from_ids(read_ids(list_file), image_dir, label_dir)
        label_map = LabelMap.from_dict({k: k - 1 for k in range(1, 60)}, ignored_raw=[0])
        super().__init__(
            finish_listing(samples, problems, strict, base), PASCAL_CONTEXT_CLASSES, label_map, transform
        )
        self.problems = problems


DATASETS.add("pascal_context", PascalContextDataset)
