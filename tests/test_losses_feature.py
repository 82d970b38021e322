"""FitNets and attention transfer: hand values, resizing, stage option, gradients."""

import math

import pytest
import torch

from loss_testing import assert_grads_student_only, run_pair, tiny_pair
from segkd.losses import LOSSES
from segkd.losses.functional import attention_map, attention_transfer_loss, fitnet_loss

GAP = (1 - 1 / math.sqrt(2)) ** 2


def test_fitnet_hand_value_and_resize():
    s = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2)
    assert fitnet_loss(s, torch.zeros(1, 1, 1, 2)).item() == pytest.approx(2.5)
    assert fitnet_loss(torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 3, 3)).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="channels"):
        fitnet_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2))


def test_attention_hand_values():
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 2, 1, 2)  # map [1, 0] -> Q = [1, 0]
    t = torch.ones(1, 1, 1, 2)  # map [1, 1] -> Q = [1/sqrt2, 1/sqrt2]
    assert torch.allclose(attention_map(s), torch.tensor([[1.0, 0.0]]))
    assert attention_transfer_loss(s, t).item() == pytest.approx((GAP + 0.5) / 2, rel=1e-6)
    paper = attention_transfer_loss(s, t, reduction="paper")
    assert paper.item() == pytest.approx(math.sqrt(GAP + 0.5), rel=1e-6)
    # negative activations count by magnitude
    assert attention_transfer_loss(-s, t).item() == pytest.approx((GAP + 0.5) / 2, rel=1e-6)


def test_invariants_and_gradcheck():
    torch.manual_seed(0)
    s = torch.randn(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 2, 2, 3, dtype=torch.float64)
    assert fitnet_loss(t, t).item() == 0.0
    assert attention_transfer_loss(t, t).item() == pytest.approx(0, abs=1e-15)
    assert attention_transfer_loss(s, torch.randn(1, 5, 4, 6, dtype=torch.float64)).item() > 0
    assert torch.autograd.gradcheck(lambda x: fitnet_loss(x, t), (s,))
    assert torch.autograd.gradcheck(lambda x: attention_transfer_loss(x, t), (s,))


def test_fitnet_module_trains_adapter():
    student, teacher, images, labels, spec = tiny_pair()
    loss = LOSSES.build("fitnet", spec=spec)
    value = run_pair(loss, student, teacher, images, labels)
    value.backward()
    assert value.item() > 0 and len(list(loss.parameters())) == 1
    assert_grads_student_only(loss, student, teacher, feat_only=True)


def test_at_module_on_feat_and_stage():
    student, teacher, images, labels, spec = tiny_pair()
    for stage in (None, 0):
        loss = LOSSES.build("at", spec=spec, stage=stage)
        student.zero_grad()
        value = run_pair(loss, student, teacher, images, labels)
        value.backward()
        assert value.item() > 0
        assert student.stem.weight.grad is not None and student.cls.weight.grad is None
        assert (student.body.weight.grad is None) == (stage == 0)
    with pytest.raises(ValueError, match="stage"):
        run_pair(LOSSES.build("at", spec=spec, stage=5), student, teacher, images, labels)
