"""The streamed Gram path of the SKD pair-wise loss equals the plain autograd computation (float64)."""

from __future__ import annotations

import pytest
import torch

from segkd.bench.naive import skd_pairwise_naive
from segkd.losses.blocked import affinity_sq_error_sum
from segkd.losses.functional.skd import l2_normalize_channels, pairwise_affinity_loss, skd_pool
from segkd.losses.functional.skd_gram import streamed_gram_sq_error_sum


def _maps(seed: int, n: int = 2, cs: int = 3, ct: int = 5, h: int = 9, w: int = 6, relu: bool = False):
    g = torch.Generator().manual_seed(seed)
    fs = torch.randn(n, cs, h, w, generator=g, dtype=torch.float64)
    ft = torch.randn(n, ct, h, w, generator=g, dtype=torch.float64)
    if relu:  # ReLU features: many exact ties (zeros) inside the pooling windows
        fs, ft = fs.clamp_min(0), ft.clamp_min(0)
    return fs.requires_grad_(), ft


def _plain(fs, ft, pool, detach, normalize_first):
    """Autograd reference: the whole pooled, normalised maps, then the pair matrices summed in full."""
    clamp = pool != "skd"
    eps = 1e-12 if clamp else 1e-8
    nodes = []
    for x in (fs, ft):
        if normalize_first:
            x = l2_normalize_channels(x, detach, eps, clamp)
        x = skd_pool(x, pool, 0.5, reference_size=tuple(ft.shape[-2:]))
        if not normalize_first:
            x = l2_normalize_channels(x, detach, eps, clamp)
        nodes.append(x.flatten(2))
    return affinity_sq_error_sum(nodes[0], nodes[1], 10**6, "blocked")


@pytest.mark.parametrize("pool,detach,normalize_first,relu", [
    ("cirkd", False, False, False), ("cirkd", False, False, True), ("cirkd", True, True, True),
    ("none", False, False, False), ("skd", True, False, True)])
@pytest.mark.parametrize("band_nodes", [1, 7, 1000])
def test_streamed_equals_plain_value_and_gradient(pool, detach, normalize_first, relu, band_nodes):
    fs, ft = _maps(0, relu=relu)
    loss = pairwise_affinity_loss(fs, ft, pool=pool, detach_norm=detach, normalize_first=normalize_first,
                                  method="gram")
    (grad,) = torch.autograd.grad(loss, fs)
    window = {"cirkd": 2, "none": 1, "skd": 4}[pool]
    clamp = pool != "skd"
    eps = 1e-12 if clamp else 1e-8

    def node_fn(x):
        if normalize_first:
            x = l2_normalize_channels(x, detach, eps, clamp)
        x = skd_pool(x, pool, 0.5, reference_size=(9, 6))
        return (x if normalize_first else l2_normalize_channels(x, detach, eps, clamp)).flatten(2)

    streamed = streamed_gram_sq_error_sum(fs, ft, node_fn, window, band_nodes)
    (grad_streamed,) = torch.autograd.grad(streamed, fs)
    ref = _plain(fs, ft, pool, detach, normalize_first)
    (grad_ref,) = torch.autograd.grad(ref, fs)
    m = node_fn(ft).shape[-1]
    assert loss.item() * 2 * m * m == pytest.approx(ref.item(), rel=1e-10, abs=1e-12)
    assert streamed.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-12)
    assert torch.allclose(grad * 2 * m * m, grad_ref, rtol=1e-8, atol=1e-12)
    assert torch.allclose(grad_streamed, grad_ref, rtol=1e-8, atol=1e-12)


def test_default_loss_equals_naive_reference_and_gradchecks():
    fs, ft = _maps(1, n=2, cs=4, ct=6, h=7, w=10)
    loss = pairwise_affinity_loss(fs, ft)  # auto: the streamed Gram method (16+24+36 < 20 * (4+6))
    naive = skd_pairwise_naive(fs, ft)
    assert loss.item() == pytest.approx(naive.item(), rel=1e-10)
    g1, g2 = (torch.autograd.grad(v, fs)[0] for v in (loss, naive))
    assert torch.allclose(g1, g2, rtol=1e-8, atol=1e-14)
    assert torch.autograd.gradcheck(lambda x: pairwise_affinity_loss(x, ft, method="gram"), (fs,))


def test_weight_scales_gradient_and_no_grad_mode():
    fs, ft = _maps(2)
    (g1,) = torch.autograd.grad(pairwise_affinity_loss(fs, ft, method="gram"), fs)
    (g3,) = torch.autograd.grad(3.0 * pairwise_affinity_loss(fs, ft, method="gram"), fs)
    assert torch.allclose(3.0 * g1, g3, rtol=1e-12)
    with torch.no_grad():
        value = pairwise_affinity_loss(fs, ft, method="gram")
    assert value.item() == pytest.approx(pairwise_affinity_loss(fs, ft, method="blocked").item(), rel=1e-10)


def test_shape_errors():
    fs, ft = _maps(3)
    with pytest.raises(ValueError, match="equal N, H, W"):
        streamed_gram_sq_error_sum(fs, ft[:1], lambda x: x.flatten(2), 1)
