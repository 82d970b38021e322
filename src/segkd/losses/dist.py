"""``dist``: DIST, Pearson-correlation distillation of class probabilities (see :func:`dist_loss`)."""

from __future__ import annotations

from torch import Tensor

from segkd.losses.base import LOSSES, DistillBatch, DistillLoss, DistillSpec
from segkd.losses.functional.dist import dist_loss
from segkd.models.outputs import SegOutput


@LOSSES.register("dist")
class DIST(DistillLoss):
    """DIST (Huang et al., NeurIPS 2022) on logits; defaults tau=1, beta=gamma=1 (segmentation setting).

    ``aux_weight`` (default 0.4, the reference's): also distil the auxiliary head,
    ``aux_weight * DIST(s.aux, t.aux)``, as the official segmentation training does (DIST_KD 2418f18
    ``segmentation/train_kd.py:258`` adds ``0.4 * lambda_kd * DIST(s_outputs[1], t_outputs[1])`` when the
    student has an aux head); 0 distils the main logits only. The term is skipped for a student without aux
    logits (e.g. MobileNetV2, as there); the engine then also runs the frozen teacher's aux head
    (``needs_teacher_aux``).
    """

    uses_labels = False  # never reads batch.labels: trains on unlabelled images too

    def __init__(self, spec: DistillSpec, beta: float = 1.0, gamma: float = 1.0, tau: float = 1.0,
                 aux_weight: float = 0.4) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"dist: option 'tau' must be > 0, got {tau}")
        if aux_weight < 0:
            raise ValueError(f"dist: option 'aux_weight' must be >= 0, got {aux_weight}")
        self.beta, self.gamma, self.tau = float(beta), float(gamma), float(tau)
        self.aux_weight = float(aux_weight)
        self.needs_teacher_aux = self.aux_weight > 0

    def teacher_reads(self) -> frozenset[str]:
        return frozenset({"logits", "aux_logits"} if self.needs_teacher_aux else {"logits"})

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        loss = dist_loss(student.logits, teacher.logits.detach(), self.beta, self.gamma, self.tau)
        if self.aux_weight > 0 and student.aux_logits is not None:
            if teacher.aux_logits is None:
                raise ValueError("dist: option 'aux_weight' needs the teacher's aux logits (a teacher built "
                                 "with an aux head, model.aux: true)")
            aux = dist_loss(student.aux_logits, teacher.aux_logits.detach(), self.beta, self.gamma, self.tau)
            loss = loss + self.aux_weight * aux
        return loss
