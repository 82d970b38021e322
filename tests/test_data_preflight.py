"""Data pre-flight: every file pair from headers, a sample fully decoded; one error naming each bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkd.data.folder import FolderDataset
from segkd.data.preflight import PreflightError, preflight, preflight_split, sample_indices
from segkd.data.synthetic import SyntheticDataset

K = 3


def _pair(root: Path, split: str, stem: str, size=(12, 16), value: int = 1, suffix: str = ".png") -> Path:
    image, label = root / "images" / split / f"{stem}{suffix}", root / "labels" / split / f"{stem}.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    label.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(image)
    lab = np.full(size, value, np.uint8)
    lab[0, 0] = 255
    Image.fromarray(lab).save(label)
    return image


def _dataset(root: Path, split: str, count: int) -> FolderDataset:
    for i in range(count):
        _pair(root, split, f"s{i:03d}")
    return FolderDataset(str(root), split, num_classes=K)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def test_sample_indices_spread_over_the_split():
    assert sample_indices(100, 5) == [0, 25, 50, 74, 99]
    assert sample_indices(3, 16) == [0, 1, 2]
    assert sample_indices(0, 16) == [] and sample_indices(10, 0) == []


def test_clean_splits_pass_with_counts(tmp_path: Path):
    train, val = _dataset(tmp_path, "train", 20), _dataset(tmp_path, "val", 5)
    reports = preflight({"train": train, "val": val, "test": None}, sample=16)
    assert [(r.split, r.header_checked, r.decoded, r.problems) for r in reports] == [
        ("train", 20, 16, []), ("val", 5, 5, [])]


def test_every_file_is_header_checked_not_only_the_sample(tmp_path: Path):
    """A truncated PNG and a truncated JPEG at unsampled positions, a text file named .png, a deleted
    label, a size mismatch: all named, by split and file, in one error."""
    val = _dataset(tmp_path, "val", 10)
    images = tmp_path / "images" / "val"
    _truncate(images / "s003.png")
    jpeg = _pair(tmp_path, "val", "s004", size=(64, 64), suffix=".jpg")  # header intact after truncation
    (images / "s004.png").unlink()
    _truncate(jpeg)
    (images / "s005.png").write_text("not an image")
    _pair(tmp_path, "val", "s006", size=(12, 15))  # label then replaced by a 16 px wide one
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(tmp_path / "labels" / "val" / "s006.png")
    val = FolderDataset(str(tmp_path), "val", num_classes=K)
    (tmp_path / "labels" / "val" / "s007.png").unlink()  # disappears after listing
    before = {p: p.read_bytes() for p in images.iterdir()}
    with pytest.raises(PreflightError) as info:
        preflight({"val": val}, sample=2)  # samples indices 0 and 9 only
    message = str(info.value)
    first = f"val: cannot read image {images}/s003.png: image file is truncated"
    assert message.startswith(f"data check before training found 5 problem(s); first: {first}")
    needles = (
        f"cannot read image {jpeg}: image file is truncated",
        f"cannot read image {images}/s005.png",
        f"image {images}/s006.png is 15x12 but its label",
        f"label {tmp_path}/labels/val/s007.png does not exist",
    )
    for needle in needles:
        assert needle in message
    assert message.endswith("nothing was trained")
    assert {p: p.read_bytes() for p in images.iterdir()} == before  # nothing modified


def test_out_of_range_label_in_the_sample_is_named(tmp_path: Path):
    train = _dataset(tmp_path, "train", 4)
    _pair(tmp_path, "val", "bad", value=7)  # K = 3: 7 is neither a class nor ignore
    val = FolderDataset(str(tmp_path), "val", num_classes=K)
    with pytest.raises(PreflightError, match=rf"val: label {tmp_path}/labels/val/bad\.png has values \[7\]"):
        preflight({"train": train, "val": val})


def test_png_with_data_after_iend_is_accepted(tmp_path: Path):
    """No end marker in the last 1 KiB but a valid decode: not refused (a missing marker is confirmed by
    decoding)."""
    val = _dataset(tmp_path, "val", 2)
    path = tmp_path / "images" / "val" / "s000.png"
    path.write_bytes(path.read_bytes() + b"\0" * 4096)
    assert preflight_split(val, "val", sample=0).problems == []


def test_dataset_without_files_is_sample_decoded(tmp_path: Path):
    report = preflight_split(SyntheticDataset(num_samples=5, image_size=16), "train", sample=3)
    assert (report.header_checked, report.decoded, report.problems) == (0, 3, [])


def test_training_checks_both_splits_before_the_first_step(tmp_path: Path, capsys: pytest.CaptureFixture):
    """The trainer runs the pre-flight: a truncated val image stops `segkd train` before any step, naming
    the file, instead of ending a finished run at its first validation."""
    from segkd.cli import main as cli_main

    root = tmp_path / "data"
    _dataset(root, "train", 4)
    _dataset(root, "val", 3)
    _truncate(root / "images" / "val" / "s001.png")
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    out = tmp_path / "run"
    argv = ["train", str(config), "model.name=test_tiny_student", "data.name=folder", f"data.root={root}",
            f"data.options={{num_classes: {K}}}", "data.crop_size=[12,16]", "data.batch_size=2",
            "data.workers=0", "train.iters=2", "train.device=cpu", f"output_dir={out}"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "data check before training found 1 problem(s)" in err and "s001.png" in err
    assert not (out / "checkpoints").exists()
