"""``ifvd``: intra-class feature variation distillation on ``feat`` (see :func:`ifvd_loss`)."""

from __future__ import annotations

from torch import Tensor

from segkd.losses.base import LOSSES, DistillBatch, DistillLoss, DistillSpec
from segkd.losses.functional.ifvd import IFVReduction, ifvd_loss
from segkd.models.outputs import SegOutput


@LOSSES.register("ifvd")
class IFVD(DistillLoss):
    """IFVD (Wang et al., ECCV 2020): MSE between student and teacher IFV maps.

    Defaults = the CIRKD re-implementation (per-image prototypes, mean over all pixels); its config
    weight is 20 (200 in the official IFVD code). No trainable parameters.
    """

    uses_labels = True  # the per-class prototypes are means over labelled pixels

    def __init__(self, spec: DistillSpec, reduction: IFVReduction = "all") -> None:
        super().__init__()
        if reduction not in ("all", "valid"):
            raise ValueError(f"ifvd: option 'reduction' must be 'all' or 'valid', got '{reduction}'")
        self.num_classes = spec.num_classes
        self.reduction = reduction

    def teacher_reads(self) -> frozenset[str]:
        return frozenset({"feat"})

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        return ifvd_loss(student.feat, teacher.feat.detach(), batch.labels, self.num_classes, self.reduction)
