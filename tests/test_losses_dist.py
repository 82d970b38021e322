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


def test_aux_term_hand_value_skip_and_teacher_aux_hook():
    """aux_weight w: DIST(main) + w * DIST(aux) (official DIST training: w = 0.4); skipped for a student
    without aux logits; the distiller runs the eval-mode teacher's aux head when a term asks for it."""
    from segkd.losses import DistillBatch, DistillSpec
    from segkd.models.outputs import SegOutput

    s, t = hand_case()  # DIST(s, t) = 27/14 + 5/3 by hand
    spec = DistillSpec(num_classes=3, student_feat_channels=1, teacher_feat_channels=1)
    batch = DistillBatch(images=torch.zeros(1, 3, 1, 2), labels=torch.zeros(1, 1, 2, dtype=torch.long))
    feat = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    loss = LOSSES.build("dist", spec=spec)  # default aux_weight 0.4, as DIST's train_kd.py
    assert loss.needs_teacher_aux and not LOSSES.build("dist", spec=spec, aux_weight=0.0).needs_teacher_aux
    # main term on identical logits: inter 0, intra 1 - (1 + 0 + 1)/3 = 1/3 (class 1 is constant: rho 0)
    student = SegOutput(logits=t, feat=feat, aux_logits=s)
    teacher = SegOutput(logits=t, feat=feat, aux_logits=t)
    assert loss(student, teacher, batch).item() == pytest.approx(1 / 3 + 0.4 * (27 / 14 + 5 / 3), rel=1e-6)
    no_aux = SegOutput(logits=s, feat=feat)
    assert loss(no_aux, teacher, batch).item() == pytest.approx(27 / 14 + 5 / 3, rel=1e-6)
    with pytest.raises(ValueError, match="aux"):
        loss(student, SegOutput(logits=t, feat=feat), batch)
    with pytest.raises(ValueError, match="aux_weight"):
        LOSSES.build("dist", spec=spec, aux_weight=-1.0)

    from segkd.engine.distiller import Distiller
    from segkd.models import build_model

    torch.manual_seed(0)
    stu, tea = build_model("test_tiny_student", 3), build_model("test_tiny_student", 3)
    images = torch.randn(2, 3, 32, 32)
    plain = Distiller(stu, tea, {"dist": LOSSES.build("dist", spec=spec, aux_weight=0.0)}, {"dist": 1.0})
    assert plain.teacher_forward(images).aux_logits is None  # eval-mode teacher: no aux head by default
    with_aux = Distiller(stu, tea, {"dist": loss}, {"dist": 1.0})
    out = with_aux.teacher_forward(images)
    tea.train()
    expected = tea(images).aux_logits  # the same head in training mode on the same stages
    tea.eval()
    assert out.aux_logits is not None and out.aux_logits.shape == expected.shape
