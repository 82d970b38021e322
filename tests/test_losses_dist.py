"""DIST: hand-computed Pearson correlations (inter and intra class), tau, gradients."""

import math

import pytest
import torch

from loss_testing import assert_grads_student_only, run_pair, tiny_pair
from segkd.losses import LOSSES
from segkd.losses.functional import dist_loss, pearson_correlation


def hand_case():
    """Two pixels, three classes, logits = log of the probabilities.

    student p1 = [.5,.3,.2], p2 = [.2,.3,.5]; teacher the reverse.
    inter: rho(p1_s, p1_t) = -13/14 (centred [5,-1,-4]/30 vs [-4,-1,5]/30), same for p2 -> 1 + 13/14
    intra: class 0 and 2 columns anti-correlated (-1), class 1 constant (rho 0 via eps) -> 1 + 2/3
    """
    ps = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]], dtype=torch.float64)
    s = ps.log().t().reshape(1, 3, 1, 2)
    t = ps.flip(1).log().t().reshape(1, 3, 1, 2)
    return s, t


def test_hand_value():
    s, t = hand_case()
    assert dist_loss(s, t).item() == pytest.approx(27 / 14 + 5 / 3, rel=1e-6)
    assert dist_loss(s, t, beta=1.0, gamma=0.0).item() == pytest.approx(27 / 14, rel=1e-6)
    assert dist_loss(s, t, beta=0.0, gamma=2.0).item() == pytest.approx(10 / 3, rel=1e-6)


def test_pearson_hand_value():
    a = torch.tensor([[1.0, 2.0, 3.0]])
    assert pearson_correlation(a, 2 * a + 1).item() == pytest.approx(1.0, rel=1e-6)
    assert pearson_correlation(a, -a).item() == pytest.approx(-1.0, rel=1e-6)


def test_tau_squared_on_both_terms():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 4, 3, 3, dtype=torch.float64)
    assert dist_loss(s, t, tau=2.0).item() == pytest.approx(4 * dist_loss(s / 2, t / 2).item(), rel=1e-9)


def test_invariants_and_gradcheck():
    torch.manual_seed(1)
    s = torch.randn(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    assert dist_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert 0 < dist_loss(s, t).item() <= 4 + 1e-9  # each term lies in [0, 2]
    assert torch.autograd.gradcheck(lambda x: dist_loss(x, t, tau=2.0), (s,))
    assert math.isfinite(dist_loss(s[:, :, :1, :1], t).item())  # sizes aligned by upsampling


def test_module_gradients():
    student, teacher, images, labels, spec = tiny_pair()
    loss = LOSSES.build("dist", spec=spec)
    value = run_pair(loss, student, teacher, images, labels)
    value.backward()
    assert value.item() > 0
    assert_grads_student_only(loss, student, teacher)
