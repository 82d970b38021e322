"""The distiller: a student, an optional frozen teacher and a dict of named, weighted loss terms.

One training step computes (CIRKD / SKD / KA total objective)

    total = CE(up(s.logits), y) + aux_weight * CE(up(s.aux_logits), y) + sum_i w_i * L_i(s, t, batch)

where ``up`` bilinearly upsamples (N, K, h, w) logits to the label size (H, W), CE ignores label 255,
``t`` is the teacher's :class:`SegOutput` computed once per step under ``torch.no_grad()`` and each
``L_i`` is a :class:`~segkd.losses.base.DistillLoss` built by name from ``distill.losses``. Without a
teacher only the task terms remain (plain supervised training), so a baseline, a teacher and every
distilled student run through the same loop.

The trainable part (student + loss-owned modules such as projection heads) lives in one module,
:class:`TrainableNet`, which is what DistributedDataParallel wraps; the frozen teacher is outside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segkd.losses.base import DistillBatch, DistillLoss, DistillSpec
from segkd.models.outputs import SegOutput


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or Inf; the message names the term and the iteration."""

    def __init__(self, term: str, iteration: int, value: float) -> None:
        super().__init__(
            f"loss term '{term}' is {value} at iteration {iteration}; stopping "
            "(the last good checkpoint is kept in checkpoints/latest.pt)"
        )
        self.term = term
        self.iteration = iteration


def upsampled_ce(logits: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
    """Cross-entropy of (N, K, h, w) logits bilinearly upsampled to the (N, H, W) labels."""
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)


@dataclass
class StepResult:
    """Everything one forward of the distiller produced."""

    total: Tensor
    terms: dict[str, Tensor]
    student: SegOutput
    teacher: SegOutput | None


class TrainableNet(nn.Module):
    """Student plus the loss terms (and their trainable modules): the part DDP wraps.

    ``forward(images, labels, teacher_out)`` returns ``(student_out, {name: unweighted term})``.
    """

    def __init__(
        self, student: nn.Module, losses: nn.ModuleDict, aux_weight: float, ignore_index: int
    ) -> None:
        super().__init__()
        self.student = student
        self.losses = losses
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index

    def forward(
        self, images: Tensor, labels: Tensor, teacher_out: SegOutput | None
    ) -> tuple[SegOutput, dict[str, Tensor]]:
        out = self.student(images)
        terms = {"ce": upsampled_ce(out.logits, labels, self.ignore_index)}
        if out.aux_logits is not None and self.aux_weight > 0:
            terms["aux_ce"] = upsampled_ce(out.aux_logits, labels, self.ignore_index)
        if teacher_out is not None:
            batch = DistillBatch(images=images, labels=labels)
            for name, loss in self.losses.items():
                terms[name] = loss(out, teacher_out, batch)
        return out, terms


class Distiller(nn.Module):
    """Student, frozen teacher (always eval, no grad, BN statistics never updated) and weighted terms.

    Args:
        student: the trained segmentor.
        teacher: frozen segmentor or None (plain supervised training).
        losses: ``{term name: DistillLoss}`` in config order.
        weights: ``{term name: weight}`` from the config (``ce`` has weight 1, ``aux_ce`` aux_weight).
        aux_weight: weight of the auxiliary-head cross-entropy.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        losses: dict[str, DistillLoss],
        weights: dict[str, float],
        aux_weight: float = 0.4,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if losses and teacher is None:
            raise ValueError("distill.losses are set but distill.teacher is missing")
        self.net = TrainableNet(student, nn.ModuleDict(losses), aux_weight, ignore_index)
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
        self.weights = {"ce": 1.0, "aux_ce": aux_weight, **weights}
        self._runner: nn.Module = self.net  # DDP(self.net) once wrapped; not registered (keeps state keys)

    @property
    def student(self) -> nn.Module:
        return self.net.student

    @property
    def losses(self) -> nn.ModuleDict:
        return self.net.losses

    def train(self, mode: bool = True) -> Distiller:
        """Switch student and losses; the teacher stays in eval mode whatever ``mode`` is."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def wrap_ddp(self, device_ids: list[int] | None = None) -> None:
        """Wrap the trainable part in DistributedDataParallel (student + loss-owned modules)."""
        has_adversary = any(loss.adversary_parameters() for loss in self.losses.values())
        self._runner = nn.parallel.DistributedDataParallel(
            self.net, device_ids=device_ids, find_unused_parameters=has_adversary or bool(self.losses)
        )

    def no_sync(self) -> Any:
        """Context skipping the DDP gradient all-reduce (gradient accumulation micro-steps)."""
        return self._runner.no_sync() if hasattr(self._runner, "no_sync") else nullcontext()

    @torch.no_grad()
    def teacher_forward(self, images: Tensor) -> SegOutput | None:
        """Teacher outputs under no_grad (None without a teacher). The eval-mode teacher skips its aux
        head; it is run on the stages when a term asks for it (``needs_teacher_aux``, DIST's aux term)."""
        if self.teacher is None:
            return None
        out = self.teacher(images)
        wants_aux = any(getattr(loss, "needs_teacher_aux", False) for loss in self.losses.values())
        aux_head = getattr(self.teacher, "aux_head", None)
        if wants_aux and out.aux_logits is None and aux_head is not None:
            out = replace(out, aux_logits=aux_head(out.stages[self.teacher.aux_index])[0])
        return out

    def compute(self, images: Tensor, labels: Tensor) -> StepResult:
        """One forward: teacher once under no_grad, student, every named term and the weighted total."""
        teacher_out = self.teacher_forward(images)
        student_out, terms = self._runner(images, labels, teacher_out)
        total = sum(self.weights[name] * value for name, value in terms.items())
        return StepResult(total=total, terms=terms, student=student_out, teacher=teacher_out)

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(total, {term name: unweighted value})``."""
        result = self.compute(images, labels)
        return result.total, result.terms

    def student_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the student optimizer: loss-owned trainable modules (not adversaries)."""
        for loss in self.losses.values():
            yield from (p for p in loss.student_parameters() if p.requires_grad)

    def adversarial_losses(self) -> dict[str, DistillLoss]:
        """Terms that own an adversary (a discriminator with its own optimizer)."""
        return {n: loss for n, loss in self.losses.items() if loss.adversary_parameters()}


def distill_spec(
    student: nn.Module, teacher: nn.Module, num_classes: int, ignore_index: int = 255
) -> DistillSpec:
    """Shapes the losses need, read from the two segmentors' attributes."""
    return DistillSpec(
        num_classes=num_classes,
        student_feat_channels=student.feat_channels,
        teacher_feat_channels=teacher.feat_channels,
        student_stage_channels=list(student.stage_channels),
        teacher_stage_channels=list(teacher.stage_channels),
        ignore_index=ignore_index,
    )


def term_names(loss_names: list[str]) -> list[str]:
    """Unique term names for the configured losses (label or loss name), ``_2``, ``_3`` on repeats."""
    seen: dict[str, int] = {}
    names = []
    for name in loss_names:
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return names
