"""segkd predict: palette label PNGs and overlays from a checkpoint or an exported ONNX file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tests.test_export import CLASSES, make_checkpoint

from segkd.cli import main
from segkd.export import InferenceGraph, ModelMeta
from segkd.export.predict import collect_images, label_png


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, size in [("a.png", (30, 44)), ("sub/b.jpg", (40, 24))]:
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _check_outputs(out, expected_sizes):
    for stem, size in expected_sizes.items():
        label = Image.open(out / "labels" / f"{stem}.png")
        assert label.mode == "P" and label.size == size[::-1]
        assert np.asarray(label).max() < len(CLASSES)
        assert label.getpalette()[:9] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
        assert Image.open(out / "overlays" / f"{stem}.png").size == size[::-1]


def test_predict_checkpoint_labels_match_model(tmp_path, images):
    ckpt, model = make_checkpoint(tmp_path / "s.pt")
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(images), "--out", str(out), "--no-progress"]) == 0
    _check_outputs(out, {"a": (30, 44), "sub/b": (40, 24)})  # paths relative to the folder are kept
    image = np.asarray(Image.open(images / "a.png").convert("RGB"), np.float32) / 255
    x = torch.from_numpy(((image - [0.5, 0.4, 0.3]) / 0.2).astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = InferenceGraph(model)(x).argmax(1)[0].numpy()
    np.testing.assert_array_equal(np.asarray(Image.open(out / "labels" / "a.png")), expected)


def test_predict_onnx_fixed_size_resizes(tmp_path, images):
    ckpt, _ = make_checkpoint(tmp_path / "s.pt")
    from segkd.export import export_student

    onnx_path = export_student(ckpt, tmp_path / "s.onnx", size=(32, 32)).path
    out = tmp_path / "out_onnx"
    assert main(["predict", str(onnx_path), str(images / "a.png"), str(images / "sub"), "--out", str(out),
                 "--no-progress"]) == 0
    _check_outputs(out, {"a": (30, 44), "b": (40, 24)})


def test_collect_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        collect_images([tmp_path / "missing.png"])
    with pytest.raises(FileNotFoundError, match="no image files"):
        collect_images([tmp_path])


def test_label_png_roundtrip_values():
    labels = np.array([[0, 2], [1, 2]])
    png = label_png(labels, np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8))
    assert np.array_equal(np.asarray(png), labels) and png.getpalette()[3:6] == [255, 0, 0]


def test_meta_defaults_to_voc_palette():
    meta = ModelMeta("x", 3, CLASSES, [0.5] * 3, [0.2] * 3)
    assert meta.palette_array.shape == (3, 3)
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        ModelMeta("x", 3, CLASSES[:2], [0.5] * 3, [0.2] * 3)
