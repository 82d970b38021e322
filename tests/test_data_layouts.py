"""Native dataset layouts built as tiny fixture trees in tmp_path, bad inputs, and ``segkd data check``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkd.cli import main
from segkd.data import DATASETS, DatasetError, build_dataset
from segkd.data.catalog import voc_palette

H, W = 8, 12


def _image(path: Path, h: int = H, w: int = W, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format=fmt)


def _label(path: Path, values: list[int], h: int = H, w: int = W, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.resize(np.array(values, dtype=np.uint8), (h, w))
    if palette:  # a VOC-style palette PNG: pixels are indices into a colour table
        img = Image.frombytes("P", (w, h), array.tobytes())
        img.putpalette(voc_palette(256).ravel().tolist())
    else:
        img = Image.fromarray(array)
    img.save(path)


def _mapped_values(ds) -> set[int]:
    return {v for i in range(len(ds)) for v in np.unique(ds.load(i)[1]).tolist()}


# ------------------------------------------------------------------------------------------------ layouts
def make_cityscapes(root: Path, kind: str = "labelIds") -> Path:
    for split, city in (("train", "aachen"), ("val", "lindau")):
        for n in range(2):
            stem = f"{city}_000000_00000{n}"
            _image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            values = [7, 26, 0, 33, 1] if kind == "labelIds" else [0, 13, 255, 18]
            _label(root / "gtFine" / split / city / f"{stem}_gtFine_{kind}.png", values)
    return root


def test_cityscapes_raw_label_ids_map_to_train_ids(tmp_path: Path) -> None:
    ds = build_dataset("cityscapes", str(make_cityscapes(tmp_path)), "train")
    assert len(ds) == 2 and ds.num_classes == 19 and ds.class_names[13] == "car"
    raw = np.resize(np.array([7, 26, 0, 33, 1]), (H, W))
    mapped = ds.load(0)[1]
    assert (mapped[raw == 7] == 0).all() and (mapped[raw == 26] == 13).all()
    assert (
        (mapped[raw == 0] == 255).all()
        and (mapped[raw == 1] == 255).all()
        and (mapped[raw == 33] == 18).all()
    )
    assert ds.palette.shape == (19, 3) and tuple(ds.palette[0]) == (128, 64, 128)
    sample = ds[0]
    assert sample["image"].shape == (3, H, W) and sample["name"] == "aachen/aachen_000000_000000"


def test_cityscapes_preconverted_train_ids(tmp_path: Path) -> None:
    ds = build_dataset("cityscapes", str(make_cityscapes(tmp_path, "labelTrainIds")), "val")
    assert len(ds) == 2 and ds.label_type == "labelTrainIds"
    assert _mapped_values(ds) == {0, 13, 255, 18}


def test_camvid(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        for n in range(3):
            _image(tmp_path / split / f"f{n}.png")
            _label(tmp_path / f"{split}annot" / f"f{n}.png", [0, 5, 10, 11])
    ds = build_dataset("camvid", str(tmp_path), "test")
    assert len(ds) == 3 and ds.num_classes == 11 and ds.class_names[0] == "sky"
    assert _mapped_values(ds) == {0, 5, 10, 255}  # 11 = void -> ignore


def make_voc(root: Path) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    ids = [f"2007_00000{n}" for n in range(5)]
    (sets / "train.txt").write_text("\n".join(ids[:3]) + "\n")
    (sets / "val.txt").write_text("\n".join(ids[3:]) + "\n")
    for image_id in ids + ["2008_000100"]:  # one extra SBD-only image
        _image(base / "JPEGImages" / f"{image_id}.jpg", fmt="JPEG")
        _label(base / "SegmentationClassAug" / f"{image_id}.png", [0, 15, 20])
    for image_id in ids:
        _label(base / "SegmentationClass" / f"{image_id}.png", [0, 1, 255], palette=True)
    return root


def test_voc_palette_png_and_aug(tmp_path: Path) -> None:
    root = str(make_voc(tmp_path))
    train = build_dataset("voc", root, "train")
    assert len(train) == 3 and train.num_classes == 21 and train.class_names[15] == "person"
    assert Image.open(train.samples[0].label).mode == "P"
    assert _mapped_values(train) == {0, 1, 255}  # palette indices, not colours
    aug = build_dataset("voc", root, "train_aug")
    assert len(aug) == 4  # all SegmentationClassAug ids except val's two
    assert _mapped_values(aug) == {0, 15, 20}
    assert len(build_dataset("voc", root, "train", aug=True)) == 4
    assert len(build_dataset("voc", root, "val")) == 2


def test_ade20k(tmp_path: Path) -> None:
    base = tmp_path / "ADEChallengeData2016"
    for folder in ("training", "validation"):
        for n in range(2):
            _image(base / "images" / folder / f"ADE_{folder}_{n}.jpg", fmt="JPEG")
            _label(base / "annotations" / folder / f"ADE_{folder}_{n}.png", [0, 1, 150, 13])
    ds = build_dataset("ade20k", str(tmp_path), "val")
    assert len(ds) == 2 and ds.num_classes == 150 and ds.class_names[0] == "wall"
    assert _mapped_values(ds) == {255, 0, 149, 12}


def test_cocostuff_converted_and_raw(tmp_path: Path) -> None:
    for n in range(2):
        _image(tmp_path / "images" / "val2017" / f"00000000000{n}.jpg", fmt="JPEG")
        _label(tmp_path / "annotations" / "val2017" / f"00000000000{n}_labelTrainIds.png", [0, 170, 255])
    ds = build_dataset("cocostuff", str(tmp_path), "val")
    assert len(ds) == 2 and ds.num_classes == 171 and ds.class_names[170] == "wood"
    assert _mapped_values(ds) == {0, 170, 255}
    raw_root = tmp_path / "raw"
    _image(raw_root / "images" / "train2017" / "a.jpg", fmt="JPEG")
    _label(raw_root / "annotations" / "train2017" / "a.png", [0, 12, 91, 181, 255])
    raw = build_dataset("cocostuff", str(raw_root), "train")
    assert raw.label_type == "raw"
    assert _mapped_values(raw) == {0, 11, 80, 170, 255}  # unused ids 11 and 90 removed before 12 and 91


def make_folder(root: Path, classes: bool = True) -> Path:
    for split in ("train", "val"):
        for n, ext in enumerate(("png", "jpg", "jpeg")):
            _image(root / "images" / split / f"s{n}.{ext}", fmt="JPEG" if ext != "png" else None)
            _label(root / "labels" / split / f"s{n}.png", [0, 1, 2, 255])
    if classes:
        (root / "classes.txt").write_text("sky\nroad\ncar\n")
    return root


def test_folder_with_classes_txt_and_option(tmp_path: Path) -> None:
    ds = build_dataset("folder", str(make_folder(tmp_path)), "train")
    assert len(ds) == 3 and ds.class_names == ("sky", "road", "car") and ds.palette.shape == (3, 3)
    assert _mapped_values(ds) == {0, 1, 2, 255}
    (tmp_path / "classes.txt").unlink()
    ds = build_dataset("folder", str(tmp_path), "val", num_classes=4)
    assert ds.num_classes == 4 and ds.class_names[3] == "class_3"
    with pytest.raises(ValueError, match="num_classes"):
        build_dataset("folder", str(tmp_path), "val")


def test_every_dataset_registered() -> None:
    expected = {"cityscapes", "camvid", "voc", "ade20k", "cocostuff", "folder", "synthetic"}
    assert expected <= set(DATASETS.names())


# --------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["cityscapes", "camvid", "voc", "ade20k", "cocostuff", "folder"])
def test_missing_root_names_path_and_layout(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="Expected layout") as info:
        build_dataset(name, str(missing), "train")
    assert str(missing) in str(info.value)


def test_missing_split_folder(tmp_path: Path) -> None:
    make_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="images/test"):
        build_dataset("folder", str(tmp_path), "test")


def test_image_without_label_and_label_without_image(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "labels" / "train" / "s0.png").unlink()
    _label(tmp_path / "labels" / "train" / "orphan.png", [0])
    with pytest.raises(DatasetError) as info:
        build_dataset("folder", str(tmp_path), "train")
    message = str(info.value)
    assert "image without label" in message and "s0.png" in message
    assert "label without image" in message and "orphan.png" in message


def test_corrupt_file_named_when_loading(tmp_path: Path) -> None:
    make_folder(tmp_path)
    bad = tmp_path / "images" / "train" / "s0.png"
    bad.write_bytes(b"not a png")
    ds = build_dataset("folder", str(tmp_path), "train")
    with pytest.raises(DatasetError, match="s0.png"):
        ds[0]


def test_size_mismatch_named_when_loading(tmp_path: Path) -> None:
    make_folder(tmp_path)
    _label(tmp_path / "labels" / "train" / "s1.png", [0], h=H + 1)
    ds = build_dataset("folder", str(tmp_path), "train")
    with pytest.raises(DatasetError, match="s1.png"):
        ds.load(1)


def test_label_values_out_of_range(tmp_path: Path) -> None:
    make_folder(tmp_path)
    _label(tmp_path / "labels" / "train" / "s2.png", [0, 3, 200])
    ds = build_dataset("folder", str(tmp_path), "train")
    with pytest.raises(DatasetError, match=r"s2\.png.*\[3, 200\]"):
        ds.load(2)


def test_data_check_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_folder(tmp_path)
    labels = tmp_path / "labels" / "train"
    (tmp_path / "images" / "train" / "s0.png").write_bytes(b"corrupt")
    _label(labels / "s1.png", [0], h=H + 2)
    _label(labels / "s2.png", [0, 9])
    _label(labels / "orphan.png", [0])
    code = main(
        ["data", "check", "--dataset", "folder", "--root", str(tmp_path), "--split", "train", "--no-progress"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "4 problem(s)" in out
    for needle in ("s0.png", "s1.png", "s2.png", "orphan.png", "label without image"):
        assert needle in out


def test_data_check_clean_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_cityscapes(tmp_path)
    code = main(["data", "check", "--dataset", "cityscapes", "--root", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "split train: 2 samples, 2 readable, 0 problem(s)" in out and "split val" in out
    assert f"min {H}x{W}" in out and "car" in out and "ignore (255)" in out


def test_data_check_from_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  name: synthetic\n  options: {num_samples: 3, image_size: 32}\n")
    assert main(["data", "check", str(config), "--no-progress"]) == 0
    assert "synthetic, split val: 3 samples" in capsys.readouterr().out


def test_data_check_missing_root_is_a_clear_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["data", "check", "--dataset", "camvid", "--root", str(tmp_path / "x"), "--no-progress"])
    assert code == 2 and "Expected layout" in capsys.readouterr().err


def test_tensor_label_dtype_from_file_dataset(tmp_path: Path) -> None:
    ds = build_dataset("folder", str(make_folder(tmp_path)), "train")
    assert ds[0]["label"].dtype == torch.int64
