"""Named outputs of every segkd segmentation network.

Losses read fields by name (``out.logits``, ``out.feat``), never by position, so a model may add
outputs without breaking any loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class SegOutput:
    """What a segmentor's forward returns.

    Attributes:
        logits: class scores at the head's resolution, (N, K, h, w) (h, w = input / output stride).
        feat: pre-classifier embedding, output of the head's conv3x3-BN-ReLU-Dropout, (N, C_feat, h, w).
            Every feature-based distillation method uses this tensor.
        aux_logits: FCN auxiliary head scores on the third backbone stage, (N, K, h, w); present only
            when the aux head is enabled *and* the model is in training mode, else None.
        stages: backbone stage features, shallow to deep, each (N, C_i, h_i, w_i).
    """

    logits: Tensor
    feat: Tensor
    aux_logits: Tensor | None = None
    stages: list[Tensor] = field(default_factory=list)

    def detached(self) -> SegOutput:
        """The same outputs cut from the autograd graph (what an adversary trains on)."""
        return SegOutput(
            logits=self.logits.detach(),
            feat=self.feat.detach(),
            aux_logits=None if self.aux_logits is None else self.aux_logits.detach(),
            stages=[s.detach() for s in self.stages],
        )

    def select(self, index: Tensor) -> SegOutput:
        """The outputs of the images at ``index`` (a (M,) long tensor of batch positions), every field
        indexed along the batch dimension (autograd flows through the indexing)."""
        return SegOutput(
            logits=self.logits[index],
            feat=None if self.feat is None else self.feat[index],  # None: a teacher cache without feat
            aux_logits=None if self.aux_logits is None else self.aux_logits[index],
            stages=[s[index] for s in self.stages],
        )
