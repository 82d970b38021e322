"""DSD (CIRKD's Double Similarity Distillation): hand-computed PSD and CSD, gradients, module wiring."""

import math

import pytest
import torch

from loss_testing import tiny_pair
from segkd.losses import LOSSES, DistillBatch
from segkd.losses.functional import category_similarity_loss, pixel_similarity_loss
from segkd.models.outputs import SegOutput


def maps(*rows):
    """One-channel (1, 1, 1, 2) maps from two-position rows."""
    return [torch.tensor(r, dtype=torch.float64).view(1, 1, 1, 2) for r in rows]


def test_psd_hand_value():
    # student attention vectors (normalised f^2): a0 = (1, 0), a1 = (0, 1), a2 = (1, 1)/sqrt2
    # teacher: positions swapped for maps 0 and 1. Residuals normalize(a_m - a_n):
    #   (0,1): s (-1, 1)/sqrt2, t (1, -1)/sqrt2 -> squared difference (2, 2), mean 2
    #   (0,2): s (-sin22.5, cos22.5), t (cos22.5, -sin22.5) -> each (cos + sin)^2 = 1 + 1/sqrt2
    #   (1,2): the mirror image -> 1 + 1/sqrt2.   PSD = (2 + 2 (1 + 1/sqrt2)) / 3 = (4 + sqrt2) / 3
    s = maps([1.0, 0.0], [0.0, 1.0], [1.0, 1.0])
    t = maps([0.0, 1.0], [1.0, 0.0], [1.0, 1.0])
    assert pixel_similarity_loss(s, t).item() == pytest.approx((4 + math.sqrt(2)) / 3, rel=1e-12)
    assert pixel_similarity_loss(t, t).item() == 0.0
    scaled = [3 * m for m in s]  # attention vectors are normalised: scale-invariant
    assert pixel_similarity_loss(scaled, t).item() == pytest.approx((4 + math.sqrt(2)) / 3, rel=1e-12)
    with pytest.raises(ValueError, match=">= 2"):
        pixel_similarity_loss(s[:1], t[:1])


def test_csd_hand_value():
    # (1, 2 classes, 2, 4) logits -> 2x2 average pool -> 1 x 2 positions; tau 4:
    # student class 0 pooled (0, 0) -> (1/2, 1/2); class 1 pooled (4 ln3, 0) -> softmax(ln3, 0) = (3/4, 1/4)
    # S_s = [[1/2, 1/2], [1/2, 5/8]]; teacher all uniform: S_t = all 1/2 -> mean of (0, 0, 0, 1/64) = 1/256
    s = torch.zeros(1, 2, 2, 4, dtype=torch.float64)
    s[0, 1, :, :2] = 4 * math.log(3.0)
    t = torch.zeros(1, 2, 2, 4, dtype=torch.float64)
    assert category_similarity_loss(s, t).item() == pytest.approx(1 / 256, rel=1e-12)
    assert category_similarity_loss(s, s).item() == 0.0


def test_dsd_gradcheck_and_module_value():
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(2, c, 3, 4, generator=g, dtype=torch.float64, requires_grad=True) for c in (3, 5, 3)]
    t = [torch.randn(2, c, 3, 4, generator=g, dtype=torch.float64) for c in (3, 7, 3)]
    assert torch.autograd.gradcheck(lambda a, b, c: pixel_similarity_loss([a, b, c], t), tuple(s))
    assert torch.autograd.gradcheck(lambda z: category_similarity_loss(z, t[2]), (s[2],))
    _, _, _, _, spec = tiny_pair()
    loss = LOSSES.build("dsd", spec=spec)
    student = SegOutput(logits=s[2], feat=s[1], aux_logits=s[0])
    teacher = SegOutput(logits=t[2], feat=t[1], aux_logits=t[0])
    batch = DistillBatch(images=torch.zeros(2, 3, 3, 4), labels=torch.zeros(2, 3, 4, dtype=torch.long))
    expected = 1000 * pixel_similarity_loss(s, t) + 10 * category_similarity_loss(s[2], t[2])
    value = loss(student, teacher, batch)
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    value.backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    # a student without aux head: CIRKD's MobileNetV2 outputs [logits, feat] -> maps (logits, feat, logits)
    no_aux = SegOutput(logits=s[2], feat=s[1])
    expected = 1000 * pixel_similarity_loss([s[2], s[1], s[2]], t) + 10 * category_similarity_loss(s[2], t[2])
    assert loss(no_aux, teacher, batch).item() == pytest.approx(expected.item(), rel=1e-12)
    with pytest.raises(ValueError, match="aux"):
        loss(student, SegOutput(logits=t[2], feat=t[1]), batch)
    assert loss.needs_teacher_aux


def test_psd_residual_order_is_cirkd_pairs():
    """Three maps give the pairs (0,1), (0,2), (1,2): swapping maps 1 and 2 in both lists permutes the
    pairs and flips one residual's sign in both, so the loss is unchanged; a one-list swap changes it."""
    g = torch.Generator().manual_seed(3)
    s = [torch.randn(1, 2, 2, 3, generator=g, dtype=torch.float64) for _ in range(3)]
    t = [torch.randn(1, 2, 2, 3, generator=g, dtype=torch.float64) for _ in range(3)]
    base = pixel_similarity_loss(s, t)
    assert pixel_similarity_loss([s[0], s[2], s[1]], [t[0], t[2], t[1]]).item() == pytest.approx(base.item())
    assert pixel_similarity_loss([s[0], s[2], s[1]], t).item() != pytest.approx(base.item())
