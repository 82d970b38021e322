"""``pascal_context``: the mmsegmentation layout built as a tiny fixture tree, 59 classes + ignore."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkd.cli import main
from segkd.data import DATASETS, DatasetError, build_dataset

H, W = 8, 12


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path, format="JPEG")


def _label(path: Path, values: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.resize(np.array(values, dtype=np.uint8), (H, W))).save(path)


def make_pascal_context(root: Path, values: tuple[int, ...] = (0, 1, 15, 59)) -> Path:
    """``root/VOCdevkit/VOC2010`` with 3 train and 2 val images."""
    base = root / "VOCdevkit" / "VOC2010"
    ids = [f"2008_00000{n}" for n in range(5)]
    sets = base / "ImageSets" / "SegmentationContext"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(ids[:3]) + "\n")
    (sets / "val.txt").write_text("\n".join(ids[3:]) + "\n")
    for image_id in ids:
        _image(base / "JPEGImages" / f"{image_id}.jpg")
        _label(base / "SegmentationClassContext" / f"{image_id}.png", list(values))
    _image(base / "JPEGImages" / "2008_000100.jpg")  # a VOC2010 image without Context label, not listed
    return root


def test_layout_classes_and_label_mapping(tmp_path: Path) -> None:
    root = make_pascal_context(tmp_path)
    train = build_dataset("pascal_context", str(root), "train")
    val = build_dataset("pascal_context", str(root / "VOCdevkit" / "VOC2010"), "val")
    assert len(train) == 3 and len(val) == 2 and "pascal_context" in DATASETS.names()
    assert train.num_classes == 59 and train.class_names[0] == "aeroplane" and train.class_names[58] == "wood"
    assert train.class_names[14] == "cat" and train.class_names[36] == "person"
    raw = np.resize(np.array([0, 1, 15, 59]), (H, W))
    mapped = train.load(0)[1]
    assert (mapped[raw == 0] == 255).all() and (mapped[raw == 1] == 0).all()  # background -> ignore
    assert (mapped[raw == 15] == 14).all() and (mapped[raw == 59] == 58).all()  # k -> k - 1
    sample = train[1]
    assert sample["image"].shape == (3, H, W) and sample["name"] == "2008_000001"


def test_value_beyond_59_is_reported(tmp_path: Path) -> None:
    root = make_pascal_context(tmp_path, values=(0, 60))
    ds = build_dataset("pascal_context", str(root), "val")
    with pytest.raises(DatasetError, match="60"):
        ds.load(0)


def test_missing_files_and_lists(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        build_dataset("pascal_context", str(tmp_path / "nowhere"), "train")
    root = make_pascal_context(tmp_path)
    with pytest.raises(FileNotFoundError, match="SegmentationContext/test.txt"):
        build_dataset("pascal_context", str(root), "test")
    (root / "VOCdevkit" / "VOC2010" / "SegmentationClassContext" / "2008_000004.png").unlink()
    with pytest.raises(DatasetError, match="image without label"):
        build_dataset("pascal_context", str(root), "val")


def test_data_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_pascal_context(tmp_path)
    code = main(["data", "check", "--dataset", "pascal_context", "--root", str(root), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "split train: 3 samples" in out and "split val: 2 samples" in out
