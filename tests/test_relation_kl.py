"""The fused similarity KL behind the CIRKD terms: values, hand-written gradients, blocking, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segkd.losses.functional.relation_kl import (
    BLOCK_ELEMENTS,
    LOW_PRECISION_RTOL,
    block_rows,
    similarity_kl_sum,
)


def autograd_reference(s_rows, s_cols, t_rows, t_cols, tau):
    """The same sum written with autograd ops, all at once."""
    z_s = torch.einsum("rc,jpc->rjp", s_rows, s_cols) / tau
    z_t = torch.einsum("rc,jpc->rjp", t_rows, t_cols) / tau
    return F.kl_div(F.log_softmax(z_s, -1), F.log_softmax(z_t, -1), reduction="sum", log_target=True)


def inputs(seed=0, rows=7, groups=3, cols=5, cs=4, ct=6):
    g = torch.Generator().manual_seed(seed)
    s_rows = torch.randn(rows, cs, generator=g, dtype=torch.float64, requires_grad=True)
    s_cols = torch.randn(groups, cols, cs, generator=g, dtype=torch.float64, requires_grad=True)
    t_rows = torch.randn(rows, ct, generator=g, dtype=torch.float64)
    t_cols = torch.randn(groups, cols, ct, generator=g, dtype=torch.float64)
    return s_rows, s_cols, t_rows, t_cols


def test_hand_computed_single_pair():
    # One row, one group of two columns, tau 1: student logits (1, -1), teacher logits (0, 0) -> uniform
    # teacher; KL(u || softmax(1, -1)) = -ln 2 - 0.5 ln(s0 s1) with s0 = 1 / (1 + e^-2), s1 = e^-2 s0.
    s_rows = torch.tensor([[1.0]], dtype=torch.float64)
    s_cols = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)
    t_rows, t_cols = torch.tensor([[1.0]], dtype=torch.float64), torch.zeros(1, 2, 1, dtype=torch.float64)
    s0 = 1 / (1 + torch.exp(torch.tensor(-2.0, dtype=torch.float64)))
    expected = -torch.log(torch.tensor(2.0, dtype=torch.float64)) - 0.5 * torch.log(s0 * s0 * torch.exp(
        torch.tensor(-2.0, dtype=torch.float64)))
    value = similarity_kl_sum(s_rows, s_cols, t_rows, t_cols, temperature=1.0)
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    assert value.item() == pytest.approx(0.4337808304830272, rel=1e-12)  # 1 - ln 2 + ln(1 + e^-2)


@pytest.mark.parametrize("block", [None, 1, 3, 7, 100])
def test_value_and_gradients_equal_autograd(block):
    s_rows, s_cols, t_rows, t_cols = inputs()
    fused = similarity_kl_sum(s_rows, s_cols, t_rows, t_cols, 0.3, block)
    grads = torch.autograd.grad(fused, (s_rows, s_cols))
    ref = autograd_reference(s_rows, s_cols, t_rows, t_cols, 0.3)
    ref_grads = torch.autograd.grad(ref, (s_rows, s_cols))
    assert fused.item() == pytest.approx(ref.item(), rel=1e-10)
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("block", [None, 2])
def test_gradcheck_rows_and_cols(block):
    s_rows, s_cols, t_rows, t_cols = inputs(seed=1, rows=4, groups=2, cols=3)
    assert torch.autograd.gradcheck(
        lambda a, b: similarity_kl_sum(a, b, t_rows, t_cols, 0.5, block), (s_rows, s_cols))


def test_rows_and_cols_as_views_of_one_tensor_sum_their_gradients():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)  # 2 images, 3 pixels
    t = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    fn = lambda f: similarity_kl_sum(f.flatten(0, 1), f, t.flatten(0, 1), t, 0.2, 2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))


def test_zero_when_equal_and_teacher_gets_no_gradient():
    s_rows, s_cols, _, _ = inputs()
    t_rows = s_rows.detach().clone().requires_grad_()
    t_cols = s_cols.detach().clone().requires_grad_()
    value = similarity_kl_sum(s_rows, s_cols, t_rows, t_cols, 0.1)
    assert value.item() == pytest.approx(0.0, abs=1e-12)
    value.backward()
    assert t_rows.grad is None and t_cols.grad is None
    assert s_rows.grad.abs().max().item() < 1e-10  # at the minimum the gradient vanishes too


def test_block_rows_and_errors():
    assert block_rows(1000) == BLOCK_ELEMENTS // 1000
    assert block_rows(BLOCK_ELEMENTS * 4) == 1
    assert block_rows(1000, 16) == 16
    s_rows, s_cols, t_rows, t_cols = inputs()
    with pytest.raises(ValueError, match="block must be >= 1"):
        similarity_kl_sum(s_rows, s_cols, t_rows, t_cols, 0.1, 0)
    with pytest.raises(ValueError, match=r"cols must be \(J, P, C\)"):
        similarity_kl_sum(s_rows, s_cols[0], t_rows, t_cols, 0.1)
    with pytest.raises(ValueError, match="student rows"):
        similarity_kl_sum(s_rows[:3], s_cols, t_rows, t_cols, 0.1)


def test_gradient_is_computed_in_forward_and_scaled_by_the_incoming_gradient():
    s_rows, s_cols, t_rows, t_cols = inputs(seed=3)
    value = similarity_kl_sum(s_rows, s_cols, t_rows, t_cols, 0.3, 2)
    (g1,) = torch.autograd.grad(value, s_rows, torch.tensor(2.5, dtype=torch.float64), retain_graph=True)
    (g2,) = torch.autograd.grad(value, s_rows, torch.tensor(-1.0, dtype=torch.float64))  # second backward
    ref = autograd_reference(s_rows, s_cols, t_rows, t_cols, 0.3)
    (g_ref,) = torch.autograd.grad(ref, s_rows)
    assert torch.allclose(g1, 2.5 * g_ref, rtol=1e-9, atol=1e-12)
    assert torch.allclose(g2, -g_ref, rtol=1e-9, atol=1e-12)


def test_forward_without_grad_mode_cannot_be_differentiated_later():
    s_rows, s_cols, t_rows, t_cols = inputs()
    with torch.no_grad():
        value = similarity_kl_sum(s_rows, s_cols, t_rows, t_cols, 0.3)
    assert not value.requires_grad  # no graph at all: nothing can call the backward


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_matmul_within_stated_bound(dtype):
    # CIRKD-like inputs: L2-normalised embeddings, tau 0.1, two images of 64 pixels, 32 / 48 channels.
    g = torch.Generator().manual_seed(4)
    s = F.normalize(torch.randn(2, 64, 32, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    t = F.normalize(torch.randn(2, 64, 48, generator=g, dtype=torch.float64), dim=-1)
    exact = similarity_kl_sum(s.flatten(0, 1), s, t.flatten(0, 1), t, 0.1)
    (g_exact,) = torch.autograd.grad(exact, s)
    s32 = s.detach().float().requires_grad_()
    t32 = t.float()
    low = similarity_kl_sum(s32.flatten(0, 1), s32, t32.flatten(0, 1), t32, 0.1, matmul_dtype=dtype)
    (g_low,) = torch.autograd.grad(low, s32)
    assert low.dtype == torch.float32
    assert abs(low.item() - exact.item()) <= LOW_PRECISION_RTOL * exact.item()
    assert (g_low.double() - g_exact).abs().max() <= LOW_PRECISION_RTOL * g_exact.abs().max()
    # ...and the bound is not vacuous: the low-precision path does differ from float32.
    full = similarity_kl_sum(s32.flatten(0, 1), s32, t.float().flatten(0, 1), t.float(), 0.1)
    assert low.item() != full.item()


def test_half_precision_inputs_are_computed_in_float32():
    s_rows, s_cols, t_rows, t_cols = inputs(seed=5)
    half = similarity_kl_sum(s_rows.bfloat16(), s_cols.bfloat16(), t_rows.bfloat16(), t_cols.bfloat16(), 0.3)
    assert half.dtype == torch.float32
    ref = similarity_kl_sum(*(x.bfloat16().double() for x in (s_rows, s_cols, t_rows, t_cols)), 0.3)
    assert half.item() == pytest.approx(ref.item(), rel=1e-5)
