"""``segkd export --dynamic`` for every registered head: ONNX Runtime runs sizes other than the example."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from tests.test_export import make_checkpoint
from torch import nn

from segkd.cli import main
from segkd.export import InferenceGraph, ModelMeta, export_model
from segkd.export.dynamic_pool import adaptive_avg_pool2d_matrix, dynamic_export_copy, pooling_matrix
from segkd.export.onnx_export import _export_legacy
from segkd.models.heads import HEADS


def test_pooling_matrix_by_hand():
    """L = 5, 3 bins: PyTorch's bins [0, 2), [1, 4), [3, 5) (they overlap), each averaged."""
    expected = torch.tensor([[1 / 2, 1 / 2, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, 1 / 2, 1 / 2]],
                            dtype=torch.float64)
    torch.testing.assert_close(pooling_matrix(5, 3, torch.float64, torch.device("cpu")), expected)


@pytest.mark.parametrize("size", [(1, 1), (4, 6), (6, 6), (7, 13), (2, 3), (12, 18)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6, (2, 3), (None, 2)])
def test_matrix_pooling_equals_adaptive_avg_pool(size, bins):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(adaptive_avg_pool2d_matrix(x, bins), F.adaptive_avg_pool2d(x, bins),
                               rtol=1e-12, atol=1e-12)
    x32 = x.float()
    torch.testing.assert_close(adaptive_avg_pool2d_matrix(x32, bins), F.adaptive_avg_pool2d(x32, bins),
                               rtol=1e-6, atol=1e-6)


def test_every_registered_head_is_covered():
    """The models below carry every registered head type (guards against a new, untested head)."""
    assert set(HEADS.names()) == {"pspnet", "deeplabv3", "fcn", "linear"}


HEAD_CARRIERS = ["test_tiny_student", "test_tiny_teacher", "demo_student", "linear_mobilenetv2"]  # PSP, ASPP,
# FCN, classifier-only (KA's student)


@pytest.mark.parametrize("name", HEAD_CARRIERS)
def test_dynamic_onnx_runs_other_sizes(tmp_path, name):
    ckpt, model = make_checkpoint(tmp_path / "s.pt", name=name)
    out = tmp_path / "s.onnx"
    assert main(["export", str(ckpt), "--out", str(out), "--size", "32x48", "--dynamic"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    graph = InferenceGraph(model).eval()
    for shape in [(2, 3, 40, 56), (1, 3, 72, 24)]:
        x = torch.randn(*shape)
        (logits,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            expected = graph(x).numpy()
        assert logits.shape == expected.shape
        np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_legacy_exporter_also_gets_dynamic_pooling(tmp_path):
    """The fallback exporter (TorchScript-based) gives a size-independent graph from the same copy."""
    _, model = make_checkpoint(tmp_path / "s.pt", name="test_tiny_student")
    graph = InferenceGraph(model).eval()
    proto = _export_legacy(dynamic_export_copy(graph), torch.zeros(1, 3, 32, 48), dynamic=True)  # in memory
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 56, 40)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"images": x.numpy()})[0], graph(x).numpy(), atol=1e-4)


def test_copy_leaves_the_model_untouched(tmp_path):
    _, model = make_checkpoint(tmp_path / "s.pt", name="test_tiny_student")
    copy = dynamic_export_copy(model)
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in copy.modules())


class _MaxPooled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.pool = nn.AdaptiveMaxPool2d(2)

    def forward(self, x):
        return type("Out", (), {"logits": self.pool(self.conv(x))})()


def test_unsupported_pooling_is_refused_before_exporting(tmp_path):
    meta = ModelMeta(model_name="m", num_classes=2, class_names=["a", "b"], mean=[0, 0, 0], std=[1, 1, 1])
    with pytest.raises(ValueError, match=r"export --dynamic: layer 'model\.pool' \(AdaptiveMaxPool2d\)"):
        export_model(_MaxPooled(), meta, tmp_path / "m.onnx", size=(16, 16), dynamic=True)
    assert not (tmp_path / "m.onnx").exists()
