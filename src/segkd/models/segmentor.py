"""The segmentation network every segkd model is: backbone stages -> head (+ training-only aux head)."""

from __future__ import annotations

from torch import Tensor, nn

from segkd.models.outputs import SegOutput


class Segmentor(nn.Module):
    """Backbone + head + optional FCN auxiliary head, returning :class:`SegOutput`.

    Args:
        backbone: maps images (N, 3, H, W) to a list of stage features, shallow to deep.
        head: maps the deepest stage (N, C_4, h, w) to ``(logits (N, K, h, w), feat (N, C_feat, h, w))``.
        aux_head: same contract, applied to stage ``aux_index`` (the third stage) in training only.
        num_classes: K.
        stage_channels: channels of each backbone stage.
        output_stride: input size / logits size (8 for the CIRKD benchmark models).

    Logits are not upsampled here: the engine resizes them to the label size.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        num_classes: int,
        stage_channels: list[int],
        output_stride: int,
        aux_head: nn.Module | None = None,
        aux_index: int = -2,
        name: str = "",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.aux_index = aux_index
        self.num_classes = num_classes
        self.stage_channels = list(stage_channels)
        self.feat_channels = int(head.feat_channels)
        self.output_stride = output_stride
        self.name = name

    def forward(self, images: Tensor) -> SegOutput:
        stages = list(self.backbone(images))
        logits, feat = self.head(stages[-1])
        aux_logits = None
        if self.aux_head is not None and self.training:
            aux_logits, _ = self.aux_head(stages[self.aux_index])
        return SegOutput(logits=logits, feat=feat, aux_logits=aux_logits, stages=stages)
