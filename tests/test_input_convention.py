"""Input conventions (model.input / distill.teacher.input): what the networks receive for an image file.

The values below are written out by hand from one 2x2 PNG: the reference training code (CIRKD
dataset/cityscapes.py:69-79, DIST segmentation/dataset/datasets.py:69-79, SKD train_and_eval.py:10) feeds
``cv2.imread`` (BGR) 0-255 minus [104.00698793, 116.66876762, 122.67891434], no division.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _engine_helpers import tiny_config, tiny_overrides
from segkd.config import load_config
from segkd.config_schema import InputConfig
from segkd.data.base import read_image
from segkd.data.transforms import EvalTransform, TrainTransform
from segkd.engine import builder, train
from segkd.engine.evaluation import evaluate
from segkd.export.metadata import ModelMeta
from segkd.export.predict import normalise
from segkd.input_convention import conversion, denormalize, from_meta, reference_bgr, to_input
from segkd.models.input_adapter import ConvertedTeacher, InputConverter

# The image: (R, G, B) per pixel, row-major.
PIXELS = [[(10, 20, 30), (255, 0, 128)], [(0, 0, 0), (200, 150, 100)]]
# What the reference pipeline feeds for it: (B - 104.00698793, G - 116.66876762, R - 122.67891434).
REFERENCE_INPUT = [
    [[30 - 104.00698793, 128 - 104.00698793], [0 - 104.00698793, 100 - 104.00698793]],  # blue plane
    [[20 - 116.66876762, 0 - 116.66876762], [0 - 116.66876762, 150 - 116.66876762]],  # green
    [[10 - 122.67891434, 255 - 122.67891434], [0 - 122.67891434, 200 - 122.67891434]],  # red
]
# The default (ImageNet) convention for the same image: (u / 255 - mean) / std in RGB order.
IMAGENET_INPUT = [
    [[(10 / 255 - 0.485) / 0.229, (255 / 255 - 0.485) / 0.229],
     [(0 - 0.485) / 0.229, (200 / 255 - 0.485) / 0.229]],
    [[(20 / 255 - 0.456) / 0.224, (0 - 0.456) / 0.224],
     [(0 - 0.456) / 0.224, (150 / 255 - 0.456) / 0.224]],
    [[(30 / 255 - 0.406) / 0.225, (128 / 255 - 0.406) / 0.225],
     [(0 - 0.406) / 0.225, (100 / 255 - 0.406) / 0.225]],
]
# The reference keeps float32 (``np.asarray(image, np.float32)``); segkd subtracts in float32 too, so the two
# agree to float32 rounding: within 2 units in the last place.
FLOAT32 = {"rtol": 2.4e-7, "atol": 1e-6}


def _expected(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.array(PIXELS, dtype=np.uint8)).save(path)
    return path


def _student_input(path: Path, conv: InputConfig) -> torch.Tensor:
    """The (1, 3, 2, 2) batch segkd's evaluation pipeline makes of the file in convention ``conv``."""
    image = read_image(path)
    x, _ = EvalTransform(conv)(image, np.zeros(image.shape[:2], dtype=np.int64))
    return x[None]


def test_default_convention_is_imagenet_rgb_as_before(image_file: Path):
    x = _student_input(image_file, InputConfig())
    torch.testing.assert_close(x[0].double(), _expected(IMAGENET_INPUT), **FLOAT32)


def test_student_in_the_reference_convention_gets_the_reference_input(image_file: Path):
    x = _student_input(image_file, reference_bgr())
    torch.testing.assert_close(x[0].double(), _expected(REFERENCE_INPUT), **FLOAT32)


def test_training_crop_in_the_reference_convention_pads_with_zero_like_the_reference(image_file: Path):
    """CIRKD pads after subtracting its mean, with 0 (dataset/cityscapes.py:85-87): segkd pads the
    normalised crop with 0 too, so the padded pixels are the mean colour in both."""
    image = read_image(image_file)
    label = np.zeros(image.shape[:2], dtype=np.int64)
    t = TrainTransform(crop_size=(3, 3), scale_range=(1.0, 1.0), flip=False, convention=reference_bgr())
    torch.manual_seed(0)
    x, y = t(image, label)
    torch.testing.assert_close(x[:, :2, :2].double(), _expected(REFERENCE_INPUT), **FLOAT32)
    assert x[:, 2, :].abs().max() == 0 and x[:, :, 2].abs().max() == 0 and (y[2, :] == 255).all()


REFERENCE_YAML = ("{channel_order: bgr, pixel_max: 255, mean: [104.00698793, 116.66876762, 122.67891434], "
                  "std: [1, 1, 1]}")


def _teacher_config(tmp_path: Path, teacher: str = "", **extra: object):
    """A tiny distillation config; ``teacher``: more keys of the teacher section (YAML flow text)."""
    overrides = tiny_overrides(tmp_path / "run", **extra) + [
        f"distill.teacher={{name: test_tiny_teacher{', ' + teacher if teacher else ''}}}",
        "distill.allow_untrained_teacher=true",
        "distill.losses=[{name: kd}]",
    ]
    return load_config(None, overrides)


def _received(teacher: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the teacher's own network receives for the student's batch ``x``."""
    seen = {}
    network = teacher.network if isinstance(teacher, ConvertedTeacher) else teacher
    handle = network.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].clone()))
    with torch.no_grad():
        teacher(x)
    handle.remove()
    return seen["x"]


def test_released_teacher_gets_the_reference_input_from_an_imagenet_student(tmp_path, image_file):
    """The student reads the image in the default ImageNet RGB convention; the teacher (a released CIRKD
    teacher's convention, distill.teacher.input) receives exactly what CIRKD's pipeline feeds it."""
    cfg = _teacher_config(tmp_path, teacher=f"input: {REFERENCE_YAML}")
    teacher = builder.build_teacher(cfg, num_classes=3)
    assert isinstance(teacher, ConvertedTeacher)
    received = _received(teacher, _student_input(image_file, cfg.model.input))
    # through the ImageNet-normalised float32 student input: float32 rounding of values up to ~132
    torch.testing.assert_close(received[0].double(), _expected(REFERENCE_INPUT), atol=1e-4, rtol=0)


def test_same_convention_builds_the_plain_teacher(tmp_path: Path, image_file: Path):
    cfg = _teacher_config(tmp_path, teacher=f"input: {REFERENCE_YAML}", **{"model.input": REFERENCE_YAML})
    teacher = builder.build_teacher(cfg, num_classes=3)
    assert not isinstance(teacher, ConvertedTeacher)
    received = _received(teacher, _student_input(image_file, cfg.model.input))
    torch.testing.assert_close(received[0].double(), _expected(REFERENCE_INPUT), **FLOAT32)


def test_teacher_without_input_takes_the_students(tmp_path: Path):
    cfg = _teacher_config(tmp_path, **{"model.input.channel_order": "bgr"})
    assert not isinstance(builder.build_teacher(cfg, num_classes=3), ConvertedTeacher)


def test_conversion_is_exact_both_ways_in_float64():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    ref, imagenet = reference_bgr(), InputConfig()
    there, back = conversion(imagenet, ref), conversion(ref, imagenet)
    assert there.index == (2, 1, 0) and back.index == (2, 1, 0)
    torch.testing.assert_close(InputConverter(back)(InputConverter(there)(x)), x, atol=1e-12, rtol=0)
    # by hand, teacher channel 0 (blue) from student channel 2:
    # x_t = x_s * 255 * 0.225 + 255 * 0.406 - 104.00698793
    assert there.scale[0] == pytest.approx(255 * 0.225)
    assert there.shift[0] == pytest.approx(255 * 0.406 - 104.00698793)
    assert conversion(ref, reference_bgr()) is None


def test_denormalize_inverts_to_input():
    u = torch.rand(3, 4, 4, dtype=torch.float64)
    for conv in (InputConfig(), reference_bgr()):
        torch.testing.assert_close(torch.as_tensor(denormalize(to_input(u, conv).numpy(), conv)), u)


def test_checkpoint_meta_records_the_convention_and_old_meta_reads_as_rgb(tmp_path: Path):
    conv = reference_bgr()
    meta = {"model_name": "m", "num_classes": 2, "class_names": ["a", "b"], "mean": conv.mean,
            "std": conv.std, "input": {"channel_order": "bgr", "pixel_max": 255.0, "mean": conv.mean,
                                       "std": conv.std}}
    assert ModelMeta.from_checkpoint({"meta": meta}).convention == conv
    old = {k: v for k, v in meta.items() if k != "input"} | {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}
    assert ModelMeta.from_checkpoint({"meta": old}).convention == InputConfig(mean=[0.5, 0.4, 0.3],
                                                                              std=[0.2, 0.2, 0.2])
    assert from_meta({}) == InputConfig()
    # exported metadata (ONNX metadata_props / TorchScript extra file) round-trips; older JSON has no keys
    exported = ModelMeta.from_checkpoint({"meta": meta})
    assert ModelMeta.from_json(exported.to_json()).convention == conv
    legacy = json.loads(exported.to_json())
    del legacy["channel_order"], legacy["pixel_max"]
    assert ModelMeta.from_json(json.dumps(legacy)).channel_order == "rgb"


def test_predict_prepares_images_in_the_recorded_convention():
    image = np.array(PIXELS, dtype=np.uint8)
    x = normalise(image, reference_bgr())
    np.testing.assert_allclose(x[0], np.array(REFERENCE_INPUT), rtol=FLOAT32["rtol"], atol=FLOAT32["atol"])


def test_legacy_data_mean_std_become_model_input(tmp_path: Path):
    path = tmp_path / "old.yaml"
    path.write_text("data: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n")
    cfg = load_config(path)
    assert cfg.model.input == InputConfig(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert cfg.data.mean is None and cfg.data.std is None
    path.write_text("data: {mean: [0.5, 0.5, 0.5]}\nmodel: {input: {channel_order: bgr}}\n")
    with pytest.raises(ValueError, match="set model.input only"):
        load_config(path)


@pytest.fixture(scope="module")
def bgr_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bgr") / "run"
    torch.manual_seed(0)
    return train(tiny_config(out, iters=2, **{"model.input.channel_order": "bgr"}))


def test_run_records_its_convention_and_eval_uses_it(bgr_run: Path, tmp_path: Path, capsys):
    from segkd.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(bgr_run / "checkpoints" / "latest.pt")
    assert ckpt["meta"]["input"]["channel_order"] == "bgr"
    right = tiny_config(tmp_path / "a", **{"model.input.channel_order": "bgr"})
    wrong = tiny_config(tmp_path / "b")  # says RGB: the checkpoint's record wins, with a note
    miou_right = evaluate(right, bgr_run / "checkpoints" / "latest.pt", tmp_path / "ea")["miou"]
    capsys.readouterr()
    miou_wrong = evaluate(wrong, bgr_run / "checkpoints" / "latest.pt", tmp_path / "eb")["miou"]
    assert "records the input convention bgr" in capsys.readouterr().out
    assert miou_wrong == miou_right


def test_segkd_teacher_checkpoint_convention_is_used_and_contradiction_refused(bgr_run: Path, tmp_path: Path):
    ckpt = bgr_run / "checkpoints" / "latest.pt"
    cfg = _teacher_config(tmp_path, teacher=f"checkpoint: {ckpt}")
    cfg.distill.teacher.name = "test_tiny_student"
    teacher = builder.build_teacher(cfg, num_classes=9)  # the synthetic scenes' classes
    assert isinstance(teacher, ConvertedTeacher) and teacher.convert.conversion.index == (2, 1, 0)
    clash = _teacher_config(tmp_path, teacher=f"checkpoint: {ckpt}, input: {{channel_order: rgb}}")
    clash.distill.teacher.name = "test_tiny_student"
    with pytest.raises(ValueError, match="records"):
        builder.build_teacher(clash, num_classes=9)


def test_a_config_saved_before_conventions_resumes_without_reported_changes(tmp_path: Path):
    """An older run's saved config (data.mean / data.std, none of the keys added since) is the same run
    as today's config of the same recipe; a real change of the convention is still named."""
    from segkd.config import to_dict
    from segkd.engine.checkpoint import changed_settings

    new = to_dict(tiny_config(tmp_path / "r"))
    old = to_dict(tiny_config(tmp_path / "r"))
    del old["model"]["input"], old["data"]["scale_step"], old["optim"]["min_lr"], old["eval"]["split"]
    old["data"]["mean"], old["data"]["std"] = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    assert changed_settings(old, new) == {}
    bgr = to_dict(tiny_config(tmp_path / "r", **{"model.input.channel_order": "bgr"}))
    assert changed_settings(old, bgr) == {"model.input.channel_order": ["rgb", "bgr"]}
