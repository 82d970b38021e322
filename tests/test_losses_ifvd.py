"""IFVD: hand-computed prototype/cosine values, per-image prototypes, reductions, gradients."""

import math

import pytest
import torch

from loss_testing import assert_grads_student_only, run_pair, tiny_pair
from segkd.losses import LOSSES
from segkd.losses.functional import ifv_map, ifvd_loss

GAP = (1 - 1 / math.sqrt(2)) ** 2  # (cos 45deg - 1)^2, by hand


def hand_case():
    """One image, 1x3 map, labels [0, 0, 255].

    student pixels [1,0], [0,1], [1,1] -> class-0 prototype [.5,.5] -> IFV [1/sqrt2, 1/sqrt2, 1 (ignored)]
    teacher pixels [1,0], [1,0], [0,3] -> prototype [1,0]            -> IFV [1, 1, 1]
    """
    s = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64).view(1, 2, 1, 3)
    t = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64).view(1, 2, 1, 3)
    labels = torch.tensor([[[0, 0, 255]]])
    return s, t, labels


def test_ifv_map_hand_values():
    s, _, labels = hand_case()
    expected = torch.tensor([[[1 / math.sqrt(2), 1 / math.sqrt(2), 1.0]]], dtype=torch.float64)
    assert torch.allclose(ifv_map(s, labels, 2), expected, atol=1e-6)


def test_reductions_hand_values():
    s, t, labels = hand_case()
    assert ifvd_loss(s, t, labels, 2).item() == pytest.approx(2 * GAP / 3, rel=1e-5)
    assert ifvd_loss(s, t, labels, 2, reduction="valid").item() == pytest.approx(GAP, rel=1e-5)


def test_prototypes_are_per_image():
    s, t, labels = hand_case()
    # second image: every pixel class 0 with identical features in both nets -> IFV 1 and 1
    s2 = torch.cat([s, torch.tensor([0.0, 1.0], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 1, 3)])
    t2 = torch.cat([t, torch.tensor([0.0, 1.0], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 1, 3)])
    labels2 = torch.cat([labels, torch.zeros(1, 1, 3, dtype=torch.long)])
    assert ifvd_loss(s2, t2, labels2, 2).item() == pytest.approx(2 * GAP / 6, rel=1e-5)


def test_labels_downsampled_and_invariants_and_gradcheck():
    torch.manual_seed(0)
    s = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 6, 8))
    labels[0, :2] = 255
    assert ifvd_loss(s, t, labels, 3).item() > 0
    assert ifvd_loss(t, t, labels, 3).item() == pytest.approx(0.0, abs=1e-12)
    assert torch.autograd.gradcheck(lambda x: ifvd_loss(x, t, labels, 3), (s,))
    with pytest.raises(ValueError, match="reduction"):
        ifvd_loss(s, t, labels, 3, reduction="sum")


def test_module_gradients():
    student, teacher, images, labels, spec = tiny_pair()
    loss = LOSSES.build("ifvd", spec=spec)
    value = run_pair(loss, student, teacher, images, labels)
    value.backward()
    assert value.item() > 0
    assert_grads_student_only(loss, student, teacher, feat_only=True)
