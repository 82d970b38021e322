"""CWD: hand-computed channel distributions, temperature, alignment conv, gradients."""

import math

import pytest
import torch

from loss_testing import assert_grads_student_only, run_pair, tiny_pair
from segkd.losses import LOSSES
from segkd.losses.functional import channel_wise_loss

LN3 = math.log(3.0)
KL_A = 0.13081203594113713  # KL([.75,.25] || [.5,.5]) by hand
KL_A_T4 = 0.14945786501204306  # 16 * KL(softmax([ln3/4, 0]) || uniform)


def test_hand_values_over_positions_and_channels():
    # channel 0: positions (ln3, 0) for the teacher, (0, 0) for the student; channel 1 identical
    t = torch.tensor([[LN3, 0.0], [0.5, 0.5]], dtype=torch.float64).view(1, 2, 1, 2)
    s = torch.tensor([[0.0, 0.0], [0.5, 0.5]], dtype=torch.float64).view(1, 2, 1, 2)
    assert channel_wise_loss(s, t, temperature=1.0).item() == pytest.approx(KL_A / 2, rel=1e-9)
    assert channel_wise_loss(s[:, :1], t[:, :1], 4.0).item() == pytest.approx(KL_A_T4, rel=1e-9)
    # batch of two identical images: / (N * C) keeps the value
    doubled = channel_wise_loss(s.repeat(2, 1, 1, 1), t.repeat(2, 1, 1, 1), 1.0)
    assert doubled.item() == pytest.approx(KL_A / 2)


def test_invariants_stability_and_gradcheck():
    torch.manual_seed(0)
    s = torch.randn(2, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 2, 2, 2, dtype=torch.float64)
    assert channel_wise_loss(t, t).abs().item() < 1e-12
    assert channel_wise_loss(s, t).item() > 0
    big = channel_wise_loss(s.float() * 1e4, t.float() * 1e4, 1.0)  # softmax().log() would give inf here
    big.backward()
    assert torch.isfinite(big) and torch.isfinite(s.grad).all()
    assert torch.autograd.gradcheck(lambda x: channel_wise_loss(x, t, 4.0), (s,))
    with pytest.raises(ValueError, match="shape"):
        channel_wise_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2))


@pytest.mark.parametrize("target", ["logits", "feat"])
def test_module_gradients_and_alignment(target):
    student, teacher, images, labels, spec = tiny_pair()
    loss = LOSSES.build("cwd", spec=spec, target=target)
    assert (len(list(loss.parameters())) > 0) == (target == "feat")  # 4 -> 6 channel conv only for feat
    value = run_pair(loss, student, teacher, images, labels)
    value.backward()
    assert value.item() > 0
    assert_grads_student_only(loss, student, teacher, feat_only=target == "feat")


def test_feature_cwd_divides_by_student_channels_like_cirkd():
    """Cs = 2 student channels, Ct = 4 teacher channels: CIRKD divides the KL sum by N * Cs (its ``n, c``
    are read before the alignment conv); mmrazor's order (connector first) divides by N * Ct."""
    from segkd.losses import DistillBatch, DistillSpec
    from segkd.models.outputs import SegOutput

    spec = DistillSpec(num_classes=3, student_feat_channels=2, teacher_feat_channels=4)
    t_feat = torch.tensor([LN3, 0.0], dtype=torch.float64).view(1, 1, 1, 2).repeat(1, 4, 1, 1)
    s_feat = torch.randn(1, 2, 1, 2, dtype=torch.float64)
    # zero alignment conv: every aligned student channel is (0, 0), i.e. uniform; each teacher channel is
    # softmax(ln3, 0) = (3/4, 1/4): four channels of KL_A each, a sum of 4 * KL_A
    out = {}
    for norm in ("student", "teacher"):
        loss = LOSSES.build("cwd", spec=spec, target="feat", temperature=1.0, normalize_by=norm).double()
        torch.nn.init.zeros_(loss.align.weight)
        logits = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
        batch = DistillBatch(images=torch.zeros(1, 3, 1, 2), labels=torch.zeros(1, 1, 2, dtype=torch.long))
        out[norm] = loss(SegOutput(logits=logits, feat=s_feat), SegOutput(logits=logits, feat=t_feat), batch)
    assert out["student"].item() == pytest.approx(4 * KL_A / 2, rel=1e-12)  # / (N * Cs) = / 2
    assert out["teacher"].item() == pytest.approx(4 * KL_A / 4, rel=1e-12)  # / (N * Ct) = / 4
    assert channel_wise_loss(torch.zeros(1, 4, 1, 2, dtype=torch.float64), t_feat, 1.0,
                             channels=2).item() == pytest.approx(2 * KL_A, rel=1e-12)
    with pytest.raises(ValueError, match="normalize_by"):
        LOSSES.build("cwd", spec=spec, target="feat", normalize_by="both")
