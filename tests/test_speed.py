"""Opt-in speed settings of the step (segkd.engine.speed): same values and gradients as the plain step."""

from __future__ import annotations

import copy

import pytest
import torch

from segkd.bench.distill import _losses, method_bundles
from segkd.engine.distiller import Distiller, StepSettings, distill_spec
from segkd.losses.base import SharedModules
from segkd.losses.ka import AutoEncoder, default_widths, save_autoencoder
from segkd.models import build_model

METHODS = sorted(method_bundles("demo"))


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    student = build_model("test_tiny_student", num_classes=5).double()
    for m in student.modules():  # dropout masks are drawn in memory order: NHWC would draw other masks
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    teacher = build_model("test_tiny_teacher", num_classes=5).double().eval().requires_grad_(False)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    labels = torch.randint(0, 5, (2, 32, 32))
    return student, teacher, images, labels


def _distiller(method: str, settings: StepSettings, tmp_path, dtype=torch.float64) -> Distiller:
    student, teacher, _, _ = _pair()
    spec = distill_spec(student, teacher, 5)
    spec = type(spec)(**{**spec.__dict__, "shared": SharedModules()})
    ae = tmp_path / "ae.pt"
    if not ae.exists():
        width = spec.teacher_feat_channels
        save_autoencoder(str(ae), AutoEncoder(width, *default_widths(width)))
    terms = method_bundles("demo")[method]
    torch.manual_seed(1)
    losses = _losses(terms, spec, str(ae))
    weights = {name: t["weight"] for name, t in zip(losses, terms)}
    d = Distiller(copy.deepcopy(student), teacher, losses, weights, 0.4, settings=settings,
                  shared=spec.shared.modules).to(dtype).train()
    return d


def _terms_and_grads(d: Distiller, images, labels):
    torch.manual_seed(2)
    result = d.compute(images, labels)
    result.total.backward()
    grads = {n: p.grad.clone() for n, p in d.student.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in result.terms.items()}, grads


@pytest.mark.parametrize("method", METHODS)
def test_inference_mode_teacher_and_channels_last_equal_the_plain_step(method, tmp_path):
    _, _, images, labels = _pair()
    plain = _terms_and_grads(_distiller(method, StepSettings(), tmp_path), images, labels)
    fast_settings = StepSettings(channels_last=True, teacher_inference=True)
    fast_d = _distiller(method, fast_settings, tmp_path)
    assert next(fast_d.student.parameters()).dim() != 4 or any(
        p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in fast_d.student.parameters())
    fast = _terms_and_grads(fast_d, images, labels)
    assert plain[0].keys() == fast[0].keys()
    for name, value in plain[0].items():
        assert torch.allclose(value, fast[0][name], rtol=1e-9, atol=1e-12), name
    assert plain[1].keys() == fast[1].keys()
    for name, grad in plain[1].items():
        assert torch.allclose(grad, fast[1][name], rtol=1e-7, atol=1e-10), name


def test_teacher_outputs_under_inference_mode_are_usable_for_backward(tmp_path):
    d = _distiller("kd", StepSettings(teacher_inference=True), tmp_path)
    _, _, images, _ = _pair()
    out = d.teacher_forward(images)
    assert not out.logits.is_inference() and not out.feat.is_inference()
    with torch.inference_mode():
        raw = d.teacher(images)
    assert raw.logits.is_inference()
    assert torch.equal(raw.logits, out.logits)


@pytest.mark.parametrize("method", METHODS)
def test_bf16_autocast_keeps_every_term_in_float32(method, tmp_path):
    """Under CPU bf16 autocast (student and teacher in bf16) every term comes out float32 and finite."""
    _, _, images, labels = _pair()
    d = _distiller(method, StepSettings(amp="bf16"), tmp_path, dtype=torch.float32)
    with d._autocast():
        result = d.compute(images.float(), labels)
    for name, value in result.terms.items():
        assert value.dtype == torch.float32, (name, value.dtype)
        assert torch.isfinite(value), name


def test_compile_wraps_forward_in_place(tmp_path):
    _, _, images, labels = _pair()
    plain = _terms_and_grads(_distiller("kd", StepSettings(), tmp_path), images, labels)
    d = _distiller("kd", StepSettings(compile="eager"), tmp_path)
    assert all(not k.startswith("_orig_mod") for k in d.student.state_dict())  # checkpoints unchanged
    compiled = _terms_and_grads(d, images, labels)
    for name, value in plain[0].items():
        assert torch.allclose(value, compiled[0][name], rtol=1e-10), name
