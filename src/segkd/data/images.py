"""A folder of images without labels: the unlabelled pool of ``data.unlabeled.root``.

Every ``.png`` / ``.jpg`` / ``.jpeg`` file under the folder, at any depth, sorted by relative path, is one
sample. Its label is ``IGNORE_INDEX`` everywhere, so the training transform (scale, pad, crop, flip)
treats it like any other sample and no pixel of it is ever a CE target. Not registered in ``DATASETS``:
it cannot be a training or validation split on its own (it has no classes of its own; the labelled
dataset's class names are given to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segkd.data.base import SegDataset, Transform, read_image
from segkd.data.layout import IMAGE_EXTENSIONS, files_by_key
from segkd.labels import IGNORE_INDEX


class ImageFolder(SegDataset):
    """Images under ``root`` (recursive); ``load`` returns (image uint8 (H, W, 3), all-ignore label, key)."""

    def __init__(
        self, root: str | Path, class_names: Sequence[str], transform: Transform | None = None
    ) -> None:
        super().__init__(class_names, transform)
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"config key 'data.unlabeled.root': folder not found: {folder}")
        self.files = list(files_by_key(folder, IMAGE_EXTENSIONS, recursive=True).items())
        if not self.files:
            raise FileNotFoundError(
                f"config key 'data.unlabeled.root': no {'/'.join(IMAGE_EXTENSIONS)} image under {folder}"
            )

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        key, path = self.files[index]
        image = read_image(path)
        return image, np.full(image.shape[:2], IGNORE_INDEX, dtype=np.int64), key
