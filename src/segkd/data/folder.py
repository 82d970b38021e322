"""``folder``: a generic dataset laid out as images and label PNGs per split.

Layout::

    ROOT/images/<split>/<stem>.(png|jpg|jpeg)
    ROOT/labels/<split>/<stem>.png        class ids 0..K-1, 255 = ignore (grey or palette PNG)
    ROOT/classes.txt                      optional: one class name per line

Sub-folders inside ``<split>`` are allowed (the relative path is the key). The class count comes from
``classes.txt`` or the ``num_classes`` option (both given: they must agree).
"""

from __future__ import annotations

from pathlib import Path

from segkd.data.base import FilePairDataset, LabelMap, Transform
from segkd.data.layout import (
    IMAGE_EXTENSIONS,
    files_by_key,
    finish_listing,
    pair_files,
    require_dir,
    require_root,
)
from segkd.data.registry import DATASETS

LAYOUT = """  ROOT/images/<split>/<stem>.(png|jpg|jpeg)
  ROOT/labels/<split>/<stem>.png   (class ids 0..K-1, 255 = ignore)
  ROOT/classes.txt                 (optional, one class name per line; else give options.num_classes)"""


def read_class_names(root: Path, num_classes: int | None) -> list[str]:
    """Class names from ``ROOT/classes.txt`` or ``class_0..class_{K-1}`` from ``num_classes``."""
    path = root / "classes.txt"
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not names:
            raise ValueError(f"folder: {path} lists no class names")
        if num_classes is not None and num_classes != len(names):
            raise ValueError(
                f"folder: {path} lists {len(names)} classes but options.num_classes is {num_classes}"
            )
        return names
    if num_classes is None or num_classes <= 0:
        raise ValueError(
            f"folder: cannot tell the number of classes: add {path} (one name per line) "
            "or set data.options.num_classes"
        )
    return [f"class_{k}" for k in range(num_classes)]


class FolderDataset(FilePairDataset):
    """Images and labels matched by relative path and stem (see the module docstring for the layout)."""

    def __init__(
        self,
        root: str | None,
        split: str = "train",
        transform: Transform | None = None,
        num_classes: int | None = None,
        strict: bool = True,
    ) -> None:
        base = require_root(root, "folder", LAYOUT)
        image_dir = require_dir(base / "images" / split, "folder", LAYOUT)
        label_dir = require_dir(base / "labels" / split, "folder", LAYOUT)
        names = read_class_names(base, num_classes)
        images = files_by_key(image_dir, IMAGE_EXTENSIONS, recursive=True)
        labels = files_by_key(label_dir, (".png",), recursive=True)
        samples, problems = pair_files(images, labels, str(label_dir / "{key}.png"))
        super().__init__(
            finish_listing(samples, problems, strict, image_dir),
            names,
            LabelMap.identity(len(names)),
            transform,
        )
        self.problems = problems


DATASETS.add("folder", FolderDataset)
