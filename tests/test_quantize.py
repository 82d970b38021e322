"""INT8 export (issue 15): static QDQ quantization of the demo student, parity report, eval, bench."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from segkd.cli import main
from segkd.config import from_dict, save_config, to_dict
from segkd.config_schema import ExperimentConfig
from segkd.engine import builder
from segkd.export.quantize import dataset_images, int8_parity

RUN = {
    "model": {"name": "demo_student"},
    "data": {"name": "synthetic", "crop_size": [32, 32], "val_batch_size": 2, "workers": 0,
             "options": {"image_size": 32, "num_samples": 6}},
    "eval": {"num_visualize": 0},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with a demo_student checkpoint (random init) on 32x32 synthetic scenes."""
    root = tmp_path_factory.mktemp("int8")
    cfg = from_dict(ExperimentConfig, {**RUN, "output_dir": str(root)})
    data = builder.build_data(cfg, need_train=False)
    torch.manual_seed(0)
    model = builder.build_student(cfg.model, data.num_classes)
    (root / "checkpoints").mkdir()
    torch.save({"model": model.state_dict(), "config": to_dict(cfg), "meta": builder.run_meta(cfg, data)},
               root / "checkpoints" / "best.pt")
    save_config(cfg, root / "config.yaml")
    return root


@pytest.fixture(scope="module")
def exported_cli(run_dir):
    """``segkd export RUN --format onnx --quantize int8 --calib 4``: (float path, int8 path, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["export", str(run_dir), "--format", "onnx", "--quantize", "int8", "--calib", "4",
                     "--parity-images", "3"]) == 0
    return run_dir / "checkpoints" / "best.onnx", run_dir / "checkpoints" / "best.int8.onnx", out.getvalue()


@pytest.fixture(scope="module")
def quantized(exported_cli):
    return exported_cli[:2]


def test_int8_file_is_qdq_with_per_channel_int8_weights_and_metadata(quantized):
    float_path, int8_path = quantized
    proto = onnx.load(str(int8_path))
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    pairs = [(inits[n.input[0]], inits[n.input[1]]) for n in proto.graph.node
             if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert pairs and all(w.dtype == np.int8 for w, _ in pairs)  # conv weights stored as int8
    assert all(s.ndim == 1 and s.size == w.shape[0] for w, s in pairs)  # one scale per output channel
    props = {p.key: p.value for p in proto.metadata_props}
    assert props == {p.key: p.value for p in onnx.load(str(float_path)).metadata_props}
    # the logits are upsampled in float: the final Resize stays outside the quantized graph
    last = [n for n in proto.graph.node if n.output[0] == proto.graph.output[0].name][0]
    assert last.op_type == "Resize"  # quantized, a DequantizeLinear would produce the output


def test_parity_report_printed_and_self_parity_exact(quantized, capsys, run_dir):
    float_path, int8_path = quantized
    cfg = from_dict(ExperimentConfig, {**RUN, "output_dir": str(run_dir)})
    images = dataset_images(cfg, "val", 3, (32, 32))
    same = int8_parity(float_path, float_path, images)
    assert same.max_abs_diff == 0.0 and same.argmax_agreement == 100.0
    report = int8_parity(float_path, int8_path, images)
    assert 0.0 < report.max_abs_diff < 10.0 and 0.0 <= report.argmax_agreement <= 100.0


def test_export_cli_prints_int8_parity(exported_cli):
    out = exported_cli[2]
    assert "quantized INT8 (QDQ, per-channel, 4 calibration images)" in out
    assert "INT8 vs float ONNX on 3 val images" in out and "argmax agreement" in out


def test_calibration_images_come_from_the_train_split(run_dir):
    cfg = from_dict(ExperimentConfig, {**RUN, "output_dir": str(run_dir)})
    train = dataset_images(cfg, "train", 4, (32, 32))
    val = dataset_images(cfg, "val", 4, (32, 32))
    resized = dataset_images(cfg, "train", 2, (40, 24))
    assert len(train) == 4 and train[0].shape == (1, 3, 32, 32) and train[0].dtype == np.float32
    assert not np.array_equal(train[0], val[0])
    assert np.array_equal(dataset_images(cfg, "train", 4, (32, 32))[3], train[3])  # deterministic
    assert resized[0].shape == (1, 3, 40, 24)


def test_eval_runs_on_float_and_int8_onnx(quantized, run_dir, capsys):
    float_path, int8_path = quantized
    from segkd.engine.evaluation import evaluate
    from segkd.export import evaluate_onnx

    cfg = from_dict(ExperimentConfig, {**RUN, "output_dir": str(run_dir)})
    ref = evaluate(cfg, run_dir / "checkpoints" / "best.pt", run_dir / "eval_pt")
    flt = evaluate_onnx(cfg, float_path, run_dir / "eval_float")
    int8 = evaluate_onnx(cfg, int8_path, run_dir / "eval_int8")
    assert flt["miou"] == pytest.approx(ref["miou"], abs=0.5)  # float ONNX = PyTorch up to ~1e-6 logits
    assert 0.0 <= int8["miou"] <= 100.0 and int8["checkpoint"] == str(int8_path)
    assert main(["eval", str(run_dir / "config.yaml"), f"checkpoint={int8_path}"]) == 0
    assert "mIoU" in capsys.readouterr().out


def test_eval_refuses_a_size_the_graph_was_not_exported_for(quantized, run_dir):
    from segkd.export.onnx_module import OnnxSegmentor

    with pytest.raises(ValueError, match="exported for 32x32"):
        OnnxSegmentor(quantized[1])(torch.zeros(1, 3, 64, 32))


def test_bench_infer_times_onnx_files_in_rounds(quantized, tmp_path, capsys):
    float_path, int8_path = quantized
    out = tmp_path / "b.json"
    assert main(["bench", "infer", str(float_path), str(int8_path), "--iters", "2", "--warmup", "1",
                 "--rounds", "2", "--json", str(out)]) == 0
    import json

    result = json.loads(out.read_text())
    first, second = result["files"]
    assert first["speedup_min"] == first["speedup_max"] == 1.0 and len(second["round_medians_ms"]) == 2
    assert "x first (median)" in capsys.readouterr().out
