"""Pixel-wise KD: hand-computed values, normalisations, masking, alignment, gradients."""

import math

import pytest
import torch

from loss_testing import assert_grads_student_only, run_pair, tiny_pair
from segkd.losses import LOSSES
from segkd.losses.functional import pixel_kd_loss

LN3 = math.log(3.0)
# Hand values: KL([.75,.25] || [.5,.5]) = .75 ln 1.5 + .25 ln .5
#              KL([.5,.5] || [.75,.25]) = .5 ln(2/3) + .5 ln 2
KL_A = 0.13081203594113713
KL_B = 0.14384103622589042


def two_pixels():
    """(1, 2, 1, 2): pixel a: s uniform, t = softmax([ln3, 0]) ; pixel b: the reverse."""
    s = torch.tensor([[[[0.0, LN3]], [[0.0, 0.0]]]], dtype=torch.float64)
    t = torch.tensor([[[[LN3, 0.0]], [[0.0, 0.0]]]], dtype=torch.float64)
    return s, t


def test_mean_reduction_hand_value():
    s, t = two_pixels()
    assert pixel_kd_loss(s, t).item() == pytest.approx((KL_A + KL_B) / 2, rel=1e-9)


@pytest.mark.parametrize("temperature,expected", [(2.0, 0.145363131481894), (4.0, 0.14945786501204306)])
def test_temperature_scales_logits_and_multiplies_t_squared(temperature, expected):
    # one pixel: s uniform, t = [ln3, 0]; expected = T^2 * KL(softmax([ln3/T, 0]) || uniform), by hand
    s = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    t = torch.tensor([LN3, 0.0], dtype=torch.float64).view(1, 2, 1, 1)
    assert pixel_kd_loss(s, t, temperature).item() == pytest.approx(expected, rel=1e-9)


def test_skd_reduction_sums_over_batch_of_cross_entropy():
    # CE to the teacher with a uniform student is ln 2 at every pixel; / (h*w) = / 2, summed over batch
    s = torch.zeros(2, 2, 1, 2, dtype=torch.float64)
    t = torch.randn(2, 2, 1, 2, dtype=torch.float64)
    assert pixel_kd_loss(s, t, reduction="skd").item() == pytest.approx(2 * math.log(2.0), rel=1e-9)
    assert pixel_kd_loss(t, t, reduction="skd").item() > 0  # CE, not KL: teacher entropy remains


def test_ignore_mask_uses_nearest_downsampled_labels():
    s, t = two_pixels()
    labels = torch.tensor([[[1, 7, 255, 0], [0, 0, 0, 0]]])  # (1, 2, 4) -> nearest (1, 2): [1, 255]
    assert pixel_kd_loss(s, t, labels=labels, num_classes=2).item() == pytest.approx(KL_A, rel=1e-9)
    assert pixel_kd_loss(s, t, reduction="skd", labels=labels).item() > 0
    all_ignored = torch.full((1, 2, 4), 255)
    assert pixel_kd_loss(s, t, labels=all_ignored).item() == 0.0


def test_different_sizes_upsample_to_larger():
    s = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    t = torch.tensor([LN3, 0.0], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 3, 3)
    assert pixel_kd_loss(s, t).item() == pytest.approx(KL_A, rel=1e-9)
    assert pixel_kd_loss(t, s).item() == pytest.approx(KL_B, rel=1e-9)


def test_invariants_and_gradcheck():
    torch.manual_seed(0)
    s = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    assert pixel_kd_loss(t, t).abs().item() < 1e-12
    assert pixel_kd_loss(s, t).item() > 0
    assert pixel_kd_loss(s * 100, t * 100).isfinite()  # log_softmax: no inf / NaN on large logits
    for reduction in ("mean", "skd"):
        assert torch.autograd.gradcheck(lambda x, r=reduction: pixel_kd_loss(x, t, 2.0, r), (s,))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="reduction"):
        pixel_kd_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1), reduction="sum")
    with pytest.raises(ValueError, match="classes"):
        pixel_kd_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 3, 1, 1))


def test_module_gradients_reach_student_only():
    student, teacher, images, labels, spec = tiny_pair()
    loss = LOSSES.build("kd", spec=spec, mask_ignore=True)
    value = run_pair(loss, student, teacher, images, labels)
    value.backward()
    assert value.item() > 0
    assert_grads_student_only(loss, student, teacher)
    with pytest.raises(ValueError, match="reduction"):
        LOSSES.build("kd", spec=spec, reduction="bad")
