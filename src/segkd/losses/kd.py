"""``kd``: pixel-wise knowledge distillation on the segmentation logits (see :func:`pixel_kd_loss`)."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from segkd.losses.base import LOSSES, DistillBatch, DistillLoss, DistillSpec
from segkd.losses.functional.kd import KDReduction, pixel_kd_loss
from segkd.models.outputs import SegOutput

KDResolution = Literal["logits", "label"]


@LOSSES.register("kd")
class PixelKD(DistillLoss):
    """Pixel-wise KD, KL(softmax(t/T) || softmax(s/T)) per pixel.

    Defaults = CIRKD ``losses/kd.py`` (T=1, mean over all pixels, x T^2, no masking), which produced the
    CIRKD table (weight 1 in the config). ``reduction="skd"`` gives the official SKD normalisation
    (sum over the batch of CE to the teacher / (h*w), weight 10). ``mask_ignore=True`` drops pixels whose
    nearest-downsampled label is ``spec.ignore_index``. ``resolution="label"`` upsamples both logit maps
    bilinearly (``align_corners=False``) to the label size (H, W) before the KL, so the mean runs over the
    label's pixels as the task CE does (the soft-target term for unlabelled images, issue 28; the reference
    computes KD on the logit grid, ``resolution="logits"``, the default).
    """

    uses_labels = False  # True with mask_ignore (set in __init__)

    def __init__(self, spec: DistillSpec, temperature: float = 1.0, reduction: KDReduction = "mean",
                 mask_ignore: bool = False, resolution: KDResolution = "logits") -> None:
        super().__init__()
        if reduction not in ("mean", "skd"):
            raise ValueError(f"kd: option 'reduction' must be 'mean' or 'skd', got '{reduction}'")
        if resolution not in ("logits", "label"):
            raise ValueError(f"kd: option 'resolution' must be 'logits' or 'label', got '{resolution}'")
        self.resolution = resolution
        self.num_classes = spec.num_classes
        self.ignore_index = spec.ignore_index
        self.temperature = float(temperature)
        self.reduction = reduction
        self.mask_ignore = mask_ignore
        self.uses_labels = bool(mask_ignore)  # the mask is read from batch.labels

    def teacher_reads(self) -> frozenset[str]:
        return frozenset({"logits"})

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        labels = batch.labels if self.mask_ignore else None
        s, t = student.logits, teacher.logits.detach()
        if self.resolution == "label":
            size = tuple(batch.images.shape[-2:])  # = the labels' (H, W); labels are not read
            s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
            t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
        return pixel_kd_loss(s, t, self.temperature, self.reduction,
                             labels=labels, num_classes=self.num_classes, ignore_index=self.ignore_index)
