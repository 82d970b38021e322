"""``cwd``: channel-wise distillation on logits or ``feat`` (see :func:`channel_wise_loss`)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from segkd.losses.base import LOSSES, DistillBatch, DistillLoss, DistillSpec
from segkd.losses.functional.common import resize_to
from segkd.losses.functional.cwd import channel_wise_loss
from segkd.models.outputs import SegOutput

CWDTarget = Literal["logits", "feat"]
CWDNorm = Literal["student", "teacher"]


@LOSSES.register("cwd")
class ChannelWiseDistillation(DistillLoss):
    """CWD (Shu et al., ICCV 2021).

    ``target="logits"`` (default; T=4, config weight 3 as in the original and CIRKD's runs) or
    ``target="feat"`` (CIRKD's feature CWD, weight 50). When the student's ``feat`` has fewer/more channels
    than the teacher's, a 1x1 conv (no bias, owned by this loss and trained with the student) maps it to
    the teacher's width; a student map of another spatial size is bilinearly resized to the teacher's.

    ``normalize_by`` (the divisor C of the KL sum, only different when the channel counts differ):
    ``"student"`` (default; CIRKD ``losses/cwd.py`` reads C before its alignment conv, so its weight 50
    on R18/MBV2 (128 ch) under R101 (256 ch) acts on sum / (N * 128)) or ``"teacher"`` (mmrazor's
    ``ChannelWiseDivergence``, applied after its connector: sum / (N * C_t)).
    """

    uses_labels = False  # never reads batch.labels: trains on unlabelled images too

    def __init__(self, spec: DistillSpec, target: CWDTarget = "logits", temperature: float = 4.0,
                 normalize_by: CWDNorm = "student") -> None:
        super().__init__()
        if target not in ("logits", "feat"):
            raise ValueError(f"cwd: option 'target' must be 'logits' or 'feat', got '{target}'")
        if normalize_by not in ("student", "teacher"):
            raise ValueError(f"cwd: option 'normalize_by' must be 'student' or 'teacher', "
                             f"got '{normalize_by}'")
        self.target, self.normalize_by = target, normalize_by
        self.temperature = float(temperature)
        s_ch, t_ch = spec.student_feat_channels, spec.teacher_feat_channels
        needs_align = target == "feat" and s_ch != t_ch
        self.align: nn.Module = nn.Conv2d(s_ch, t_ch, 1, bias=False) if needs_align else nn.Identity()

    def teacher_reads(self) -> frozenset[str]:
        return frozenset({self.target})

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        s, t = (student.logits, teacher.logits) if self.target == "logits" else (student.feat, teacher.feat)
        channels = s.shape[1] if self.normalize_by == "student" else t.shape[1]
        s = resize_to(self.align(s), tuple(t.shape[-2:]))
        return channel_wise_loss(s, t.detach(), self.temperature, channels)
