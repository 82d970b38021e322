"""``fitnet`` and ``at``: feature-imitation baselines (see :mod:`segkd.losses.functional.feature`)."""

from __future__ import annotations

from torch import Tensor, nn

from segkd.losses.base import LOSSES, DistillBatch, DistillLoss, DistillSpec
from segkd.losses.functional.feature import ATReduction, attention_transfer_loss, fitnet_loss
from segkd.models.outputs import SegOutput


@LOSSES.register("fitnet")
class FitNet(DistillLoss):
    """FitNets hint on ``feat``: ``MSE(r(f_s), f_t)`` with r a 1x1 conv (no bias) owned by the loss.

    ``adapter="auto"`` adds r only when channel counts differ; ``"always"`` always adds it.
    """

    uses_labels = False  # never reads batch.labels: trains on unlabelled images too

    def __init__(self, spec: DistillSpec, adapter: str = "always") -> None:
        super().__init__()
        if adapter not in ("auto", "always"):
            raise ValueError(f"fitnet: option 'adapter' must be 'auto' or 'always', got '{adapter}'")
        s_ch, t_ch = spec.student_feat_channels, spec.teacher_feat_channels
        use = adapter == "always" or s_ch != t_ch
        self.adapter: nn.Module = nn.Conv2d(s_ch, t_ch, 1, bias=False) if use else nn.Identity()

    def teacher_reads(self) -> frozenset[str]:
        return frozenset({"feat"})

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        return fitnet_loss(self.adapter(student.feat), teacher.feat.detach())


@LOSSES.register("at")
class AttentionTransfer(DistillLoss):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017) on ``feat`` or one backbone stage.

    Options: ``p`` (2), ``stage`` (None: ``feat``; an int indexes ``SegOutput.stages`` of both networks,
    e.g. -1 for the deepest), ``reduction`` (``"mean_squared"`` as the AT code, or ``"paper"``).
    Channel counts may differ; no parameters.
    """

    uses_labels = False  # never reads batch.labels: trains on unlabelled images too

    def __init__(self, spec: DistillSpec, p: float = 2.0, stage: int | None = None,
                 reduction: ATReduction = "mean_squared") -> None:
        super().__init__()
        if reduction not in ("mean_squared", "paper"):
            raise ValueError(f"at: option 'reduction' must be 'mean_squared' or 'paper', got '{reduction}'")
        self.p, self.stage, self.reduction = float(p), stage, reduction

    def _pick(self, out: SegOutput, who: str) -> Tensor:
        if self.stage is None:
            return out.feat
        if not out.stages or not -len(out.stages) <= self.stage < len(out.stages):
            raise ValueError(f"at: option 'stage'={self.stage} is out of range for the {who}'s "
                             f"{len(out.stages)} backbone stages")
        return out.stages[self.stage]

    live_teacher_reason = "option 'stage' reads a teacher backbone stage, which a teacher cache does not hold"

    def teacher_reads(self) -> frozenset[str] | None:
        return frozenset({"feat"}) if self.stage is None else None

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        s, t = self._pick(student, "student"), self._pick(teacher, "teacher")
        return attention_transfer_loss(s, t.detach(), self.p, self.reduction)
