"""segkd export: ONNX / TorchScript of the student only, metadata, parity check and its failure."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from segkd.config import to_dict
from segkd.config_schema import ExperimentConfig, ModelConfig
from segkd.export import ParityError, export_student, load_model
from segkd.export.onnx_export import read_onnx_meta
from segkd.export.parity import check, compare
from segkd.models import build_model

CLASSES = ["road", "car", "sky"]


def make_checkpoint(path, name: str = "test_tiny_student", crop=(32, 48)):
    """A segkd-layout checkpoint of a randomly initialised tiny student, plus distillation extras."""
    torch.manual_seed(0)
    model = build_model(name, len(CLASSES))
    cfg = ExperimentConfig(model=ModelConfig(name=name))
    cfg.data.crop_size = list(crop)
    ckpt = {
        "model": model.state_dict(),
        "losses": {"cirkd_memory": {"proj.weight": torch.randn(4, 4)}},
        "config": to_dict(cfg),
        "iteration": 3,
        "meta": {"model_name": name, "num_classes": len(CLASSES), "class_names": CLASSES,
                 "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2],
                 "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]},
    }
    torch.save(ckpt, path)
    return path, model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    ckpt, _ = make_checkpoint(root / "student.pt")
    return ckpt, export_student(ckpt, fmt="onnx")


def test_onnx_export_parity_and_metadata(exported):
    ckpt, result = exported
    assert result.path == ckpt.with_suffix(".onnx") and result.path.is_file()
    assert result.parity.max_abs_diff < 1e-3 and result.parity.argmax_agreement > 99.0
    meta = read_onnx_meta(result.path)
    assert meta.class_names == CLASSES and meta.mean == [0.5, 0.4, 0.3] and meta.std == [0.2, 0.2, 0.2]
    assert meta.palette == [[1, 2, 3], [4, 5, 6], [7, 8, 9]] and meta.input_size == [32, 48]
    proto = onnx.load(str(result.path))
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert not [i.name for i in proto.graph.initializer if "aux" in i.name]


def test_onnx_output_is_upsampled_logits_matching_checkpoint(exported):
    ckpt, result = exported
    onnx_model, torch_model = load_model(result.path), load_model(ckpt)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 48), dtype=np.float32)
    out, ref = onnx_model.run(x), torch_model.run(x)
    assert out.shape == (1, len(CLASSES), 32, 48)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert onnx_model.fixed_size == (32, 48)


def test_torchscript_export_dynamic_sizes(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path / "s.pt", name="test_tiny_teacher")
    result = export_student(ckpt, tmp_path / "s.ts", fmt="torchscript", size=(32, 32), dynamic=True)
    assert result.parity.max_abs_diff < 1e-4 and len(result.parity.shapes) == 2
    model = load_model(result.path)
    assert model.kind == "torchscript" and model.meta.class_names == CLASSES
    assert model.run(np.zeros((1, 3, 40, 24), np.float32)).shape == (1, 3, 40, 24)


def test_parity_failure_is_reported_with_numbers():
    x = [np.random.default_rng(0).standard_normal((1, 3, 8, 8), dtype=np.float32)]
    report = compare(lambda a: a, lambda a: a + 0.5, x)
    assert report.max_abs_diff == pytest.approx(0.5) and report.argmax_agreement == 100.0
    with pytest.raises(ParityError, match=r"max \|logit diff\| 0.5 > tolerance 0.001"):
        check(report, atol=1e-3, min_agreement=99.0, path="m.onnx")
    flipped = compare(lambda a: a, lambda a: -a, x)
    with pytest.raises(ParityError, match="argmax agreement"):
        check(flipped, atol=10.0, min_agreement=99.0, path="m.onnx")


def test_export_cli_errors_cleanly_on_missing_checkpoint(tmp_path, capsys):
    from segkd.cli import main

    assert main(["export", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_failed_parity_never_leaves_the_final_file(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path / "student.pt")
    target = tmp_path / "student.onnx"
    target.write_bytes(b"earlier export")  # an earlier good export stays as it was
    with pytest.raises(ParityError, match="student-2.failed-parity.onnx") as info:
        export_student(ckpt, path=target, fmt="onnx", atol=-1.0)  # no graph can pass a negative tolerance
    assert "student-2.onnx was not written" in str(info.value)  # the earlier export's name is not reused
    assert target.read_bytes() == b"earlier export"
    assert (tmp_path / "student-2.failed-parity.onnx").is_file()
    assert not (tmp_path / "student-2.onnx").exists()
    assert not list(tmp_path.glob(".*exporting*"))
