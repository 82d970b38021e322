"""``voc``: PASCAL VOC 2012 segmentation, optionally with the SBD "aug" training set.

Layout (ROOT is ``VOC2012``; a ``VOCdevkit`` folder or its parent is also accepted)::

    ROOT/JPEGImages/<id>.jpg
    ROOT/SegmentationClass/<id>.png         palette PNG, read as indices (0..20, 255 = boundary/ignore)
    ROOT/SegmentationClassAug/<id>.png      SBD "aug" labels, plain ids (only for the aug split)
    ROOT/ImageSets/Segmentation/<split>.txt one id per line (train, val, trainval[, train_aug])

Splits: ``train``, ``val``, ``trainval`` and ``train_aug`` (alias ``aug``; or option ``aug: true`` with
split ``train``): the 10582 SBD-augmented images, listed by ``train_aug.txt`` when present, otherwise every
label in ``SegmentationClassAug`` whose id is not in ``val.txt``.
"""

from __future__ import annotations

from pathlib import Path

from segkd.data.base import FilePairDataset, LabelMap, Transform
from segkd.data.catalog import VOC_CLASSES, voc_palette
from segkd.data.layout import finish_listing, pairs_from_ids, require_dir, require_root
from segkd.data.registry import DATASETS

LAYOUT = """  ROOT/JPEGImages/<id>.jpg
  ROOT/SegmentationClass/<id>.png          (palette PNG)
  ROOT/SegmentationClassAug/<id>.png       (optional SBD aug labels)
  ROOT/ImageSets/Segmentation/<split>.txt  (train.txt, val.txt, trainval.txt[, train_aug.txt])"""

AUG_SPLITS = ("train_aug", "aug")


def find_voc_root(base: Path) -> Path:
    """``base`` itself, or ``base/VOC2012`` / ``base/VOCdevkit/VOC2012`` when those hold the data."""
    for candidate in (base, base / "VOC2012", base / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    return base


def read_ids(path: Path) -> list[str]:
    """Image ids from a split list file (first token of each non-empty line)."""
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def aug_ids(root: Path) -> list[str]:
    """Ids of the SBD-augmented training set."""
    listed = root / "ImageSets" / "Segmentation" / "train_aug.txt"
    if listed.is_file():
        return read_ids(listed)
    label_dir = require_dir(root / "SegmentationClassAug", "voc", LAYOUT)
    val_file = root / "ImageSets" / "Segmentation" / "val.txt"
    val = set(read_ids(val_file)) if val_file.is_file() else set()
    return sorted(p.stem for p in label_dir.glob("*.png") if p.stem not in val)


class VOCDataset(FilePairDataset):
    """PASCAL VOC 2012 (+ SBD aug); see the module docstring."""

    def __init__(
        self,
        root: str | None,
        split: str = "train",
        transform: Transform | None = None,
        aug: bool = False,
        strict: bool = True,
    ) -> None:
        base = find_voc_root(require_root(root, "voc", LAYOUT))
        image_dir = require_dir(base / "JPEGImages", "voc", LAYOUT)
        use_aug = split in AUG_SPLITS or (aug and split == "train")
        if use_aug:
            ids, label_dir = aug_ids(base), require_dir(base / "SegmentationClassAug", "voc", LAYOUT)
        else:
            list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
            if not list_file.is_file():
                raise FileNotFoundError(f"voc: split list not found: {list_file}\nExpected layout:\n{LAYOUT}")
            ids, label_dir = read_ids(list_file), require_dir(base / "SegmentationClass", "voc", LAYOUT)
        samples, problems = pairs_from_ids(ids, image_dir, label_dir)
        super().__init__(
            finish_listing(samples, problems, strict, base),
            VOC_CLASSES,
            LabelMap.identity(len(VOC_CLASSES)),
            transform,
            voc_palette(len(VOC_CLASSES)),
        )
        self.problems = problems


DATASETS.add("voc", VOCDataset)
