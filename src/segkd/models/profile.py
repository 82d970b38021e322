"""Parameter and MAC counting in two conventions, plus CPU latency.

Transposed convs (ESPNet's decoder) count ``N * C_in * H_in * W_in * C_out * kh * kw / groups`` in both.

(a) ``paper``: the convention of the CIRKD benchmark table (REFERENCE section 1, verified there by
    recomputation): params = all parameters *including* the training-only aux head; MACs of Conv2d and
    Linear only, ``Cin * Cout * kh * kw * Hout * Wout / groups`` per image, the aux head included, and the
    conv output size computed **ignoring dilation**: ``Hout = floor((H + 2 p - k) / s) + 1``, so an ASPP
    conv with dilation d = padding d is counted at (H + 2d - 2) x (W + 2d - 2).
(b) ``deploy``: what inference really costs: no aux head (neither params nor MACs), true output sizes,
    and every module the model runs, per output element unless said otherwise:
    conv ``Cin/groups * kh * kw`` MACs, linear ``in_features``, BatchNorm/GroupNorm/LayerNorm 1 (scale and
    shift), activations 1, max/avg pooling ``kh * kw``, adaptive average pooling 1 per *input* element,
    bilinear resize 4 (a weighted sum of 4 neighbours), nearest resize 0. Tensor additions (residuals),
    concatenations and dropout (identity at inference) are not counted: they are not modules.

All counts are MACs (multiply-accumulates); FLOPs = 2 x MACs.

Counting uses forward hooks rather than fvcore / thop because neither implements the paper's rule of
ignoring dilation in the output size, and because the model runs on PyTorch's ``meta`` device: shapes
propagate with no arithmetic and no memory, so a 1024x2048 ResNet-101 is counted instantly.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from segkd.models.heads import Resize

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.PReLU,
    nn.ELU,
    nn.Mish,
)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def count_params(model: nn.Module, include_aux: bool = True) -> int:
    """Number of parameters (BN affine included); without the aux head when ``include_aux`` is False."""
    aux = getattr(model, "aux_head", None)
    aux_ids = {id(p) for p in aux.parameters()} if aux is not None and not include_aux else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in aux_ids)


def paper_conv_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    """Conv2d / Linear MACs with the output size computed ignoring dilation (the benchmark's rule)."""
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, nn.ConvTranspose2d):
        return transposed_conv_macs(module, inputs[0])
    if not isinstance(module, nn.Conv2d):
        return 0
    n, _, h, w = inputs[0].shape
    (kh, kw), (sh, sw), (ph, pw) = module.kernel_size, module.stride, module.padding
    h_out, w_out = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    per_pixel = module.in_channels * module.out_channels * kh * kw // module.groups
    return n * per_pixel * h_out * w_out


def transposed_conv_macs(module: nn.ConvTranspose2d, x: Tensor) -> int:
    """MACs of a transposed conv: every input element meets ``C_out / groups * kh * kw`` weights,
    ``N * C_in * H_in * W_in * C_out * kh * kw / groups`` (the same in both conventions)."""
    kh, kw = module.kernel_size
    return x.numel() * module.out_channels * kh * kw // module.groups


def deploy_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> tuple[str, int]:
    """(category, MACs) of one leaf module at its true output size; see the module docstring."""
    if isinstance(module, nn.ConvTranspose2d):
        return "conv_linear", transposed_conv_macs(module, inputs[0])
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return "conv_linear", output.numel() * module.in_channels // module.groups * kh * kw
    if isinstance(module, nn.Linear):
        return "conv_linear", output.numel() * module.in_features
    if isinstance(module, _NORMS):
        return "norm", output.numel()
    if isinstance(module, _ACTIVATIONS):
        return "activation", output.numel()
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = module.kernel_size
        kh, kw = (k, k) if isinstance(k, int) else k
        return "pooling", output.numel() * kh * kw
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return "pooling", inputs[0].numel()
    if isinstance(module, (Resize, nn.Upsample)):
        bilinear = isinstance(module, Resize) or module.mode in ("bilinear", "linear")
        return "interpolation", output.numel() * (4 if bilinear else 0)
    return "other", 0


def _run_with_hooks(model: nn.Module, images: Tensor, hook: Callable[..., None]) -> None:
    leaves = [m for m in model.modules() if not list(m.children()) or isinstance(m, Resize)]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()


def _on_meta(model: nn.Module) -> nn.Module:
    """A meta-device copy of ``model`` (shapes only), or the model itself if already on meta."""
    first = next(iter(model.parameters()), None)
    if first is not None and first.is_meta:
        return model
    return copy.deepcopy(model).to("meta")


def count_macs_paper(model: nn.Module, size: Sequence[int], batch: int = 1) -> int:
    """Convention (a): Conv2d + Linear MACs, dilation ignored, aux head run (training-mode forward with BN
    and dropout in eval mode so batch 1 works)."""
    meta = _on_meta(model)
    was_training = meta.training
    meta.train()
    for m in meta.modules():
        if isinstance(m, (*_NORMS, nn.Dropout)):
            m.eval()
    total = [0]

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Any) -> None:
        if isinstance(output, Tensor):
            total[0] += paper_conv_macs(module, inputs, output)

    _run_with_hooks(meta, torch.empty(batch, 3, *size, device="meta"), hook)
    meta.train(was_training)
    return total[0]


def count_macs_deploy(model: nn.Module, size: Sequence[int], batch: int = 1) -> dict[str, int]:
    """Convention (b): eval-mode forward (no aux head), every op at its true size; per-category MACs."""
    meta = _on_meta(model)
    was_training = meta.training
    meta.eval()
    totals: dict[str, int] = {"conv_linear": 0, "norm": 0, "activation": 0, "pooling": 0, "interpolation": 0}

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Any) -> None:
        if isinstance(output, Tensor):
            category, macs = deploy_macs(module, inputs, output)
            if category in totals:
                totals[category] += macs

    _run_with_hooks(meta, torch.empty(batch, 3, *size, device="meta"), hook)
    meta.train(was_training)
    return totals


def measure_latency(
    model: nn.Module, size: Sequence[int], runs: int = 10, warmup: int = 2
) -> dict[str, float]:
    """Median / min CPU forward time in ms at batch 1 (eval mode, inference mode) over ``runs`` runs."""
    model = model.eval()
    x = torch.randn(1, 3, *size)
    times = []
    with torch.inference_mode():
        for index in range(warmup + runs):
            start = time.perf_counter()
            model(x)
            if index >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "runs": runs,
        "threads": torch.get_num_threads(),
    }


def profile_model(
    model: nn.Module, size: Sequence[int] = (1024, 2048), *, latency: bool = False, latency_runs: int = 10
) -> dict[str, Any]:
    """Params and MACs of ``model`` at input 1 x 3 x H x W in both conventions (+ CPU latency on request).

    Returns ``{"input_size": [H, W], "paper": {"params", "macs"}, "deploy": {"params", "macs",
    "breakdown"}, "latency": {...} or None, "note"}``; all MAC counts are MACs, FLOPs = 2 x MACs.
    ``latency`` needs real weights (a model not on the meta device).
    """
    size = [int(s) for s in size]
    meta = _on_meta(model)
    breakdown = count_macs_deploy(meta, size)
    result: dict[str, Any] = {
        "input_size": size,
        "paper": {"params": count_params(meta, include_aux=True), "macs": count_macs_paper(meta, size)},
        "deploy": {
            "params": count_params(meta, include_aux=False),
            "macs": sum(breakdown.values()),
            "breakdown": breakdown,
        },
        "latency": measure_latency(model, size, latency_runs) if latency else None,
        "note": "MACs = multiply-accumulates; FLOPs = 2 x MACs",
    }
    return result
