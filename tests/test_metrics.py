"""Confusion-matrix metrics and test-time inference modes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from segkd.config_schema import EvalConfig
from segkd.engine.inference import predict_logits
from segkd.engine.metrics import SegMetric, confusion_matrix, metrics_from_confusion
from segkd.models.outputs import SegOutput


def test_hand_computed_confusion_matrix():
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 2]])
    conf = confusion_matrix(pred, label, num_classes=3)
    # rows: ground truth, columns: prediction; the 255 pixel is dropped.
    expected = torch.tensor([[1, 1, 0], [0, 2, 1], [1, 0, 1]])
    assert torch.equal(conf, expected)
    m = metrics_from_confusion(conf, ["a", "b", "c"])
    # IoU a = 1/(2+2-1)=1/3, b = 2/(3+3-2)=1/2, c = 1/(2+2-1)=1/3
    assert m["per_class_iou"]["a"] == pytest.approx(100 / 3)
    assert m["per_class_iou"]["b"] == pytest.approx(50.0)
    assert m["miou"] == pytest.approx(100 * (1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert m["pixel_acc"] == pytest.approx(100 * 4 / 7)
    assert m["mean_acc"] == pytest.approx(100 * (1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert m["num_pixels"] == 7


def test_perfect_and_all_wrong():
    label = torch.randint(0, 4, (2, 8, 8))
    metric = SegMetric(4)
    metric.update(label.clone(), label)
    assert metric.compute()["miou"] == pytest.approx(100.0)
    assert metric.compute()["pixel_acc"] == pytest.approx(100.0)
    wrong = SegMetric(4)
    wrong.update((label + 1) % 4, label)
    assert wrong.compute()["miou"] == 0.0
    assert wrong.compute()["pixel_acc"] == 0.0


def test_ignore_pixels_never_counted():
    label = torch.full((1, 4, 4), 255)
    label[0, 0, 0] = 1
    pred = torch.zeros_like(label)  # every ignored pixel predicted as class 0
    pred[0, 0, 0] = 1
    m = metrics_from_confusion(confusion_matrix(pred, label, 3))
    assert m["num_pixels"] == 1
    assert m["miou"] == pytest.approx(100.0)
    assert m["per_class_iou"]["0"] is None  # class 0 appears only under ignored pixels


def test_metric_accumulates_over_batches():
    torch.manual_seed(0)
    label = torch.randint(0, 3, (4, 5, 5))
    pred = torch.randint(0, 3, (4, 5, 5))
    metric = SegMetric(3)
    metric.update(pred[:2], label[:2])
    metric.update(pred[2:], label[2:])
    assert torch.equal(metric.conf, confusion_matrix(pred, label, 3))


class _ConvSeg(nn.Module):
    """A position-dependent stride-2 model so sliding windows and flips really differ from whole."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, k, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> SegOutput:
        logits = self.conv(x)
        return SegOutput(logits=logits, feat=logits)


def test_slide_with_window_equal_image_matches_whole():
    model = _ConvSeg().eval()
    images = torch.randn(2, 3, 16, 24)
    whole = predict_logits(model, images, EvalConfig(mode="whole"), 3)
    slide = predict_logits(model, images, EvalConfig(mode="slide", crop_size=[16, 24], stride=[8, 8]), 3)
    assert whole.shape == (2, 3, 16, 24)
    assert torch.allclose(whole, slide, atol=1e-6)
    small = predict_logits(model, images, EvalConfig(mode="slide", crop_size=[8, 8], stride=[4, 4]), 3)
    assert small.shape == whole.shape and not torch.allclose(small, whole, atol=1e-4)


def test_multiscale_single_scale_equals_whole_and_flip_averages():
    model = _ConvSeg().eval()
    images = torch.randn(1, 3, 16, 16)
    whole = predict_logits(model, images, EvalConfig(mode="whole"), 3)
    ms = predict_logits(model, images, EvalConfig(mode="multiscale", scales=[1.0]), 3)
    assert torch.allclose(whole, ms, atol=1e-6)
    flipped = predict_logits(model, images.flip(-1), EvalConfig(mode="whole"), 3).flip(-1)
    both = predict_logits(model, images, EvalConfig(mode="whole", flip=True), 3)
    assert torch.allclose(both, (whole + flipped) / 2, atol=1e-6)
    two = predict_logits(model, images, EvalConfig(mode="multiscale", scales=[0.5, 1.0]), 3)
    assert two.shape == whole.shape and math.isfinite(two.sum().item())
