"""``ade20k``: the ADE20K SceneParsing release (ADEChallengeData2016), 150 classes.

Layout (ROOT is ``ADEChallengeData2016`` or its parent)::

    ROOT/images/{training,validation}/<stem>.jpg
    ROOT/annotations/{training,validation}/<stem>.png   0 = "other", 1..150 = classes

Label ``0 -> 255`` (ignore) and ``k -> k - 1``. Splits ``train``/``val`` are aliases of the folder names.
This is what the references do: CIRKD ``dataset/ade20k.py`` subtracts 1 from the uint8 label (0 becomes
its ignore value -1) and mmsegmentation's ``ADE20KDataset`` sets ``reduce_zero_label=True`` (0 -> 255,
k -> k - 1).
"""

from __future__ import annotations

from pathlib import Path

from segkd.data.base import FilePairDataset, LabelMap, Transform
from segkd.data.catalog import ADE20K_CLASSES
from segkd.data.layout import (
    IMAGE_EXTENSIONS,
    files_by_key,
    finish_listing,
    pair_files,
    require_dir,
    require_root,
)
from segkd.data.registry import DATASETS

LAYOUT = """  ROOT/images/{training,validation}/<stem>.jpg
  ROOT/annotations/{training,validation}/<stem>.png   (0 = other/ignore, 1..150 = classes)"""

SPLIT_ALIASES = {"train": "training", "val": "validation"}


class ADE20KDataset(FilePairDataset):
    """ADE20K SceneParsing (see the module docstring)."""

    def __init__(
        self, root: str | None, split: str = "train", transform: Transform | None = None, strict: bool = True
    ) -> None:
        base = require_root(root, "ade20k", LAYOUT)
        if not (base / "images").is_dir() and (base / "ADEChallengeData2016").is_dir():
            base = base / "ADEChallengeData2016"
        folder = SPLIT_ALIASES.get(split, split)
        image_dir = require_dir(base / "images" / folder, "ade20k", LAYOUT)
        label_dir = require_dir(base / "annotations" / folder, "ade20k", LAYOUT)
        images = files_by_key(image_dir, IMAGE_EXTENSIONS)
        labels = files_by_key(label_dir, (".png",))
        samples, problems = pair_files(images, labels, str(Path(label_dir) / "{key}.png"))
        label_map = LabelMap.from_dict({k: k - 1 for k in range(1, 151)}, ignored_raw=[0])
        super().__init__(
            finish_listing(samples, problems, strict, image_dir), ADE20K_CLASSES, label_map, transform
        )
        self.problems = problems


DATASETS.add("ade20k", ADE20KDataset)
