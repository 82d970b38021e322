"""``dist``: DIST, Pearson-correlation distillation of class probabilities (see :func:`dist_loss`)."""

from __future__ import annotations

from torch import Tensor

from segkd.losses.base import LOSSES, DistillBatch, DistillLoss, DistillSpec
from segkd.losses.functional.dist import dist_loss
from segkd.models.outputs import SegOutput


@LOSSES.register("dist")
class DIST(DistillLoss):
    """DIST (Huang et al., NeurIPS 2022) on logits; defaults tau=1, beta=gamma=1 (segmentation setting)."""

    def __init__(self, spec: DistillSpec, beta: float = 1.0, gamma: float = 1.0, tau: float = 1.0) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"dist: option 'tau' must be > 0, got {tau}")
        self.beta, self.gamma, self.tau = float(beta), float(gamma), float(tau)

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        return dist_loss(student.logits, teacher.logits.detach(), self.beta, self.gamma, self.tau)
