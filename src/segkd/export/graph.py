"""The student's inference graph: images in, logits at input resolution out.

Segmentors return a :class:`~segkd.models.outputs.SegOutput` with logits at 1/output_stride; exported
models instead return one tensor, the logits bilinearly upsampled (``align_corners=False``) to the input
size, so that ``argmax(dim=1)`` is directly the label map. Only the student is traced: no auxiliary head
(the model runs in eval mode and :func:`strip_training_modules` removes it), and none of the loss-owned
modules of a checkpoint (projection heads, adapters, discriminator) are ever loaded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def strip_training_modules(model: nn.Module) -> nn.Module:
    """Drop the training-only auxiliary head (``aux_head = None``) and switch to eval mode."""
    if getattr(model, "aux_head", None) is not None:
        model.aux_head = None
    return model.eval()


class InferenceGraph(nn.Module):
    """Wraps a segmentor: ``forward(images (N,3,H,W)) -> logits (N,K,H,W)`` upsampled to the input size."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = strip_training_modules(model)

    def forward(self, images: Tensor) -> Tensor:
        logits = self.model(images).logits
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


@torch.inference_mode()
def run_torch(graph: nn.Module, images: Tensor) -> Tensor:
    """Run the graph without autograd on its parameters' device; returns CPU float logits."""
    device = next(graph.parameters()).device
    return graph(images.to(device)).float().cpu()
