"""All-ignore batches (labels all 255): task loss 0 with zero gradient; no NaN in label-reading terms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segkd.engine.distiller import Distiller, distill_spec, upsampled_ce
from segkd.losses import build_loss
from segkd.losses.base import DistillBatch
from segkd.models import build_model

IGNORE = 255


def test_ce_of_all_ignored_batch_is_zero_with_zero_gradient():
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.full((2, 4, 4), IGNORE)
    loss = upsampled_ce(logits, labels)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_ce_is_the_mean_over_labelled_pixels():
    """Two pixels, one labelled: the loss is that pixel's -log softmax, written out by hand."""
    logits = torch.tensor([[[[1.0, 5.0]], [[3.0, -2.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    labels = torch.tensor([[[0, IGNORE]]])
    expected = -(1.0 - math.log(math.exp(1.0) + math.exp(3.0)))  # pixel 0, class 0
    assert upsampled_ce(logits, labels).item() == pytest.approx(expected, rel=1e-12)


def test_ce_matches_pytorch_mean_reduction_when_pixels_are_labelled():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 5, (2, 6, 6))
    labels[0, :3] = IGNORE
    ours = upsampled_ce(logits, labels)
    up = F.interpolate(logits, size=(6, 6), mode="bilinear", align_corners=False)
    reference = F.cross_entropy(up, labels, ignore_index=IGNORE)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-12)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-15)
    assert torch.autograd.gradcheck(lambda x: upsampled_ce(x, labels), (logits,))


def _pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return build_model("test_tiny_student", 3).train(), build_model("test_tiny_teacher", 3).eval()


def test_training_step_on_all_ignored_batch_is_finite_and_keeps_weights():
    """Supervised step (CE + aux CE) on an all-ignored batch: total 0, weights unchanged by SGD."""
    student, _ = _pair()
    distiller = Distiller(student, None, {}, {}, aux_weight=0.4)
    state = student.state_dict()
    before = {k: v.clone() for k, v in state.items() if "running" not in k and "tracked" not in k}
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    total, terms = distiller(torch.randn(2, 3, 32, 32), torch.full((2, 32, 32), IGNORE))
    total.backward()
    optimizer.step()
    assert set(terms) == {"ce", "aux_ce"} and total.item() == 0.0
    after = student.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


LABEL_READING_TERMS = [
    ("kd", {"mask_ignore": True}, 0.0),
    ("ifvd", {}, None),  # mean over all pixels: ignored pixels keep IFV 1 on both sides, so ~0 but not exact
    ("ifvd", {"reduction": "valid"}, 0.0),
    ("cirkd_batch_p2p", {}, None),
    ("cirkd_memory_p2p", {}, 0.0),  # no anchors: the term is 0
    ("cirkd_memory_p2r", {}, 0.0),
]


@pytest.mark.parametrize(("name", "options", "expected"), LABEL_READING_TERMS)
def test_label_reading_terms_are_finite_on_all_ignored_batch(
    name: str, options: dict, expected: float | None
):
    """After one labelled batch (memories filled) an all-ignored batch gives a finite term and gradient."""
    student, teacher = _pair()
    loss = build_loss(name, distill_spec(student, teacher, 3), **options)
    images = torch.randn(2, 3, 32, 32)
    for labels in (torch.randint(0, 3, (2, 32, 32)), torch.full((2, 32, 32), IGNORE)):
        student.zero_grad()
        value = loss(student(images), teacher(images), DistillBatch(images=images, labels=labels))
        value.backward()
        assert torch.isfinite(value)
        grads = [p.grad for p in student.parameters() if p.grad is not None]
        assert all(torch.isfinite(g).all() for g in grads)
    if expected is not None:
        assert value.item() == expected
