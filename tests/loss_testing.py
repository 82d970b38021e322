"""Shared fixtures of the distillation-loss tests: tiny student/teacher pairs producing SegOutput."""

from __future__ import annotations

import torch
from torch import nn

from segkd.losses import DistillBatch, DistillSpec
from segkd.models.outputs import SegOutput

NUM_CLASSES = 3


class TinySeg(nn.Module):
    """Conv stem (stride 2) -> feat (C channels) -> 1x1 classifier; two backbone "stages"."""

    def __init__(self, feat_channels: int, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.body = nn.Conv2d(5, feat_channels, 3, padding=1)
        self.cls = nn.Conv2d(feat_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> SegOutput:
        s1 = torch.relu(self.stem(x))
        feat = torch.relu(self.body(s1))
        return SegOutput(logits=self.cls(feat), feat=feat, stages=[s1, feat])


def tiny_pair(seed: int = 0, s_ch: int = 4, t_ch: int = 6, size: int = 8, batch: int = 2):
    """(student, teacher, images, labels, spec); the teacher is frozen (requires_grad False)."""
    torch.manual_seed(seed)
    student, teacher = TinySeg(s_ch), TinySeg(t_ch)
    for p in teacher.parameters():
        p.requires_grad_(False)
    images = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, NUM_CLASSES, (batch, size, size))
    labels[:, 0, :] = 255
    spec = DistillSpec(num_classes=NUM_CLASSES, student_feat_channels=s_ch, teacher_feat_channels=t_ch,
                       student_stage_channels=[5, s_ch], teacher_stage_channels=[5, t_ch])
    return student, teacher, images, labels, spec


def run_pair(loss: nn.Module, student: nn.Module, teacher: nn.Module, images: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
    """Forward student, teacher (no_grad, as the engine does) and the loss."""
    s_out = student(images)
    with torch.no_grad():
        t_out = teacher(images)
    return loss(s_out, t_out, DistillBatch(images=images, labels=labels))


def assert_grads_student_only(loss: nn.Module, student: nn.Module, teacher: nn.Module,
                              feat_only: bool = False) -> None:
    """Every student parameter (and every loss parameter) got a finite gradient; the teacher none.

    ``feat_only``: the loss reads ``feat`` only, so the classifier is exempt (and must get no gradient).
    """
    for name, p in student.named_parameters():
        if feat_only and name.startswith("cls."):
            assert p.grad is None
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"student {name} has no gradient"
    assert any(p.grad.abs().sum() > 0 for p in student.parameters())
    for name, p in loss.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"loss {name} has no gradient"
    for p in teacher.parameters():
        assert p.grad is None
