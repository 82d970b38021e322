"""Segmentors whose head reads several backbone stages (encoder-decoder networks).

:class:`~segkd.models.segmentor.Segmentor` feeds only the deepest stage to its head. DeepLabV3+, ESPNet and
MobileNetV2Plus fuse shallow, high-resolution stages into the prediction, so their heads take the whole
list: ``head(stages) -> (logits, feat)``. Everything else (named outputs, the training-only aux head, the
attributes the engine and losses read) is the same as for :class:`Segmentor`.
"""

from __future__ import annotations

from torch import Tensor

from segkd.models.outputs import SegOutput
from segkd.models.segmentor import Segmentor


class MultiStageSegmentor(Segmentor):
    """A :class:`Segmentor` whose head maps the list of stage features to ``(logits, feat)``.

    ``output_stride`` is input size / logits size (4 for DeepLabV3+ and MobileNetV2Plus, 1 for ESPNet,
    8 for ESPNet-C); ``feat`` may be at another resolution than ``logits`` (the model's docstring says).
    """

    def forward(self, images: Tensor) -> SegOutput:
        stages = list(self.backbone(images))
        logits, feat = self.head(stages)
        aux_logits = None
        if self.aux_head is not None and self.training:
            aux_logits, _ = self.aux_head(stages[self.aux_index])
        return SegOutput(logits=logits, feat=feat, aux_logits=aux_logits, stages=stages)
