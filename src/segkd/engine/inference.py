"""Test-time inference: whole image, sliding window, multi-scale and flip.

Every mode returns class scores at the input's full resolution, (N, K, H, W):

- whole: ``up(model(x).logits)``.
- slide: windows of ``crop_size`` every ``stride`` (the last window is aligned to the border), each
  window's upsampled logits added into the canvas and divided by the per-pixel window count; a window
  as large as the image reduces exactly to ``whole``.
- multiscale: for each scale ``s`` the image is resized by ``s``, run whole, its logits upsampled back
  to (H, W), and the results averaged.
- flip (any mode): the horizontally flipped image's logits, flipped back, are averaged in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segkd.config_schema import EvalConfig


def _up(logits: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def whole_logits(model: nn.Module, images: Tensor) -> Tensor:
    """Model logits upsampled to the image size, (N, K, H, W)."""
    return _up(model(images).logits.float(), tuple(images.shape[-2:]))


def _window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets covering ``size`` with windows of ``crop`` every ``stride``, last one flush."""
    if crop >= size:
        return [0]
    starts = list(range(0, size - crop, stride)) + [size - crop]
    return sorted(set(starts))


def slide_logits(
    model: nn.Module, images: Tensor, crop: list[int], stride: list[int], num_classes: int
) -> Tensor:
    """Sliding-window logits, (N, K, H, W); overlapping windows are averaged."""
    n, _, h, w = images.shape
    ch, cw = min(crop[0], h), min(crop[1], w)
    canvas = images.new_zeros((n, num_classes, h, w), dtype=torch.float32)
    count = images.new_zeros((1, 1, h, w), dtype=torch.float32)
    for y in _window_starts(h, ch, stride[0]):
        for x in _window_starts(w, cw, stride[1]):
            canvas[:, :, y : y + ch, x : x + cw] += whole_logits(model, images[:, :, y : y + ch, x : x + cw])
            count[:, :, y : y + ch, x : x + cw] += 1
    return canvas / count


def _single_pass(model: nn.Module, images: Tensor, cfg: EvalConfig, num_classes: int) -> Tensor:
    if cfg.mode == "slide":
        return slide_logits(model, images, cfg.crop_size, cfg.stride, num_classes)
    return whole_logits(model, images)


def _with_flip(model: nn.Module, images: Tensor, cfg: EvalConfig, num_classes: int) -> Tensor:
    logits = _single_pass(model, images, cfg, num_classes)
    if cfg.flip:
        flipped = _single_pass(model, images.flip(-1), cfg, num_classes).flip(-1)
        logits = (logits + flipped) / 2
    return logits


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, cfg: EvalConfig, num_classes: int) -> Tensor:
    """Logits at full input resolution for the mode, scales and flip of ``cfg`` (model in eval mode)."""
    if cfg.mode not in ("whole", "slide", "multiscale"):
        raise ValueError(f"eval.mode must be whole, slide or multiscale, got {cfg.mode!r}")
    if cfg.mode != "multiscale":
        return _with_flip(model, images, cfg, num_classes)
    size = tuple(images.shape[-2:])
    total = None
    for scale in cfg.scales:
        scaled = (
            images
            if scale == 1.0
            else F.interpolate(
                images, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False
            )
        )
        logits = _up(_with_flip(model, scaled, cfg, num_classes), size)
        total = logits if total is None else total + logits
    return total / len(cfg.scales)
