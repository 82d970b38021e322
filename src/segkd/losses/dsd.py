"""``dsd``: Double Similarity Distillation as in CIRKD's code (see :mod:`segkd.losses.functional.dsd`)."""

from __future__ import annotations

from torch import Tensor

from segkd.losses.base import LOSSES, DistillBatch, DistillLoss, DistillSpec
from segkd.losses.functional.common import resize_to
from segkd.losses.functional.dsd import category_similarity_loss, pixel_similarity_loss
from segkd.models.outputs import SegOutput


def _maps(out: SegOutput, role: str) -> list[Tensor]:
    """CIRKD's ``[outputs[-2], outputs[-1], outputs[0]]``: (aux logits, feat, logits) for a model with an
    aux head; a student without one (CIRKD's MobileNetV2, outputs ``[logits, feat]``) gives
    (logits, feat, logits). Maps of another size are bilinearly resized to the logits' size."""
    first = out.aux_logits
    if first is None:
        if role == "teacher":
            raise ValueError("dsd: the teacher's aux logits are missing (the reference's teacher has an aux "
                             "head: build it with model.aux: true)")
        first = out.logits
    size = tuple(out.logits.shape[-2:])
    return [resize_to(first, size), resize_to(out.feat, size), out.logits]


@LOSSES.register("dsd")
class DoubleSimilarityDistillation(DistillLoss):
    """DSD (Feng et al., TIP 2021) as CIRKD ``losses/dsd.py`` computes it:
    ``psd_weight * PSD([aux, feat, logits]) + csd_weight * CSD(logits)``.

    Defaults are CIRKD's ``scripts/train_kd/train_dsd.sh`` (``--lambda-psd 1000 --lambda-csd 10``, CSD
    tau 4), so the config weight is 1. PSD compares the pairwise residuals of the spatial attention
    maps of (aux logits, feat, logits); CSD the class-to-class similarity of pooled, position-softmaxed
    logits. The frozen teacher's aux head is run for this term (``needs_teacher_aux``).
    """

    uses_labels = False  # never reads batch.labels: trains on unlabelled images too

    needs_teacher_aux = True

    def __init__(self, spec: DistillSpec, psd_weight: float = 1000.0, csd_weight: float = 10.0,
                 tau: float = 4.0) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"dsd: option 'tau' must be > 0, got {tau}")
        self.psd_weight, self.csd_weight, self.tau = float(psd_weight), float(csd_weight), float(tau)

    def teacher_reads(self) -> frozenset[str]:
        return frozenset({"aux_logits", "feat", "logits"})

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        s_maps = _maps(student, "student")
        t_maps = [m.detach() for m in _maps(teacher, "teacher")]
        psd = pixel_similarity_loss(s_maps, t_maps)
        csd = category_similarity_loss(student.logits, teacher.logits.detach(), self.tau)
        return self.psd_weight * psd + self.csd_weight * csd
