"""Opt-in speed settings of the training step (``train.channels_last``, ``train.teacher_inference``,
``train.compile``; mixed precision is ``train.amp``), applied by :class:`~segkd.engine.distiller.Distiller`.

- ``channels_last``: student and teacher weights and the input images in the NHWC memory format
  (``torch.channels_last``), which cuDNN's convolutions (tensor cores under AMP) and oneDNN on CPU
  prefer. Values are unchanged; the losses receive NHWC feature maps and must not assume contiguity
  (they reshape, never ``view``: checked for every registered loss by ``tests/test_speed.py``).
- ``teacher_inference``: the teacher's forward under ``torch.inference_mode`` instead of ``no_grad``
  (no version counters or view tracking). Inference tensors cannot be saved for backward, and every
  loss that combines a teacher output with a student tensor in a differentiable op (KL, products,
  differences with a squared gradient, ...) saves it; so the outputs are cloned into ordinary tensors
  (:func:`usable_outside`) before the losses see them. The clone costs one copy of the teacher's
  outputs (logits, feat, stages), small next to its forward.
- ``compile``: ``torch.compile`` of the student's and the teacher's forward with the given backend
  (``nn.Module.compile``: in place, so parameter names and checkpoints are unchanged).

Mixed precision (``train.amp``): autocast covers the teacher and the student forward; the loss terms
(CE included) then run in float32 on float32 copies of both networks' outputs (:func:`float32_losses`).
Autocast alone would not do: CPU autocast keeps softmax, log-softmax and KL in bfloat16, and the
Gram identity of SKD's pair-wise term cancels catastrophically in half precision
(``tests/test_speed.py::test_bf16_autocast_keeps_every_term_in_float32`` found kd, cwd, dist, ifvd and
ka_affinity in bfloat16 before this). The relational losses also cast up themselves
(:mod:`segkd.losses.functional.relation_kl`, :mod:`segkd.losses.functional.skd_gram`); their opt-in
``matmul_dtype`` is the one place a term runs products in half precision on purpose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from segkd.models.outputs import SegOutput


def apply_to_networks(settings: Any, student: nn.Module, teacher: nn.Module | None) -> None:
    """Memory format and compilation of the two networks, as ``settings`` ask (in place)."""
    for net in (student, teacher):
        if net is None:
            continue
        if settings.channels_last:
            net.to(memory_format=torch.channels_last)
        if settings.compile:
            net.compile(backend=settings.compile)


def input_format(images: Tensor, settings: Any) -> Tensor:
    """Images in the networks' memory format (NHWC with ``channels_last``)."""
    return images.contiguous(memory_format=torch.channels_last) if settings.channels_last else images


def teacher_mode(settings: Any) -> AbstractContextManager:
    """``torch.inference_mode()`` with ``teacher_inference``, else nothing (the caller runs under no_grad)."""
    return torch.inference_mode() if settings.teacher_inference else nullcontext()


def usable_outside(out: SegOutput, settings: Any) -> SegOutput:
    """Teacher outputs the losses may save for backward: clones of the inference tensors (see the module
    docstring); unchanged without ``teacher_inference``."""
    if not settings.teacher_inference:
        return out
    return SegOutput(
        logits=out.logits.clone(),
        feat=out.feat.clone(),
        aux_logits=None if out.aux_logits is None else out.aux_logits.clone(),
        stages=[s.clone() for s in out.stages],
    )


def _float32(out: SegOutput | None) -> SegOutput | None:
    """``out`` with half-precision tensors cast to float32 (differentiable; others unchanged)."""
    if out is None:
        return None

    def up(t: Tensor | None) -> Tensor | None:
        return t.float() if t is not None and t.dtype in (torch.float16, torch.bfloat16) else t

    return SegOutput(logits=up(out.logits), feat=up(out.feat), aux_logits=up(out.aux_logits),
                     stages=[up(s) for s in out.stages])


@contextmanager
def float32_losses(like: Tensor) -> Iterator[Callable[[SegOutput | None], SegOutput | None]]:
    """Inside an autocast region: autocast off, and a function casting outputs to float32. Outside one:
    nothing changes (the function returns its argument)."""
    device = like.device.type
    if not torch.is_autocast_enabled(device):
        yield lambda out: out
        return
    with torch.autocast(device, enabled=False):
        yield _float32
