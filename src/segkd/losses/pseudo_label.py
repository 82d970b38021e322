"""``pseudo_label``: cross-entropy to the teacher's hard labels on the unlabelled images.

The teacher's arg-max class at each pixel, kept where its confidence reaches a threshold, is the target of
an ordinary cross-entropy for the student:

    L = 1 / (N_u H W) * sum_{n, p} 1[max_k q[n, k, p] >= tau] * CE(up(z_s)[n, :, p], argmax_k q[n, k, p])

with ``q = softmax(up(z_t))``, ``up`` bilinear upsampling of (N, K, h, w) logits to the label size (H, W)
(``align_corners=False``, as the task CE), and the mean over *every* pixel of the term's N_u images,
masked ones included, as FixMatch computes it (Sohn et al., "FixMatch", NeurIPS 2020, Eq. 4:
``(1/mu B) sum 1(max q >= tau) H(q_hat, p)``; google-research/fixmatch ``fixmatch.py``: mask ``>=
confidence``, ``reduce_mean`` of the masked CE; default tau = 0.95). ``normalize: confident`` divides by
the confident pixels instead; ``normalize: labeled`` divides the sum by the pixels of the batch's *labelled*
images, ``n_l H W``, so that with weight 1 a pseudo-labelled pixel weighs exactly as much as a labelled one
in the task CE, whatever share of the batch is unlabelled: ``CE + L`` is then ``N / n_l`` times the
per-pixel mean over the whole batch, the loss of training on the union of labelled and pseudo-labelled
images as ordinary labels (predict, then train). ``threshold: 0`` keeps every pixel: the teacher's hard
labels as ordinary labels, which is how Naive-Student (Chen et al., ECCV 2020) trains on Cityscapes'
unlabelled ``train_extra`` frames.

Which images: ``images: unlabeled`` (default; FixMatch's unlabelled batch, the labelled ones having their
own CE) or ``all``. The term reads no ground truth.

Weighting rule (issue 28), ``normalize: labeled`` (the unlabelled-image bundle's): every pixel counts once,
at the label resolution, labelled or pseudo-labelled, and the weight (1) is relative to the task CE; the
term's scale follows neither the batch's unlabelled share nor the image size nor the class count. With the
FixMatch default (a mean over the unlabelled images) the unlabelled images together weigh as much as the
labelled ones together, so each one's weight falls as their share rises (measured: at 7 unlabelled + 1
labelled image per batch, weight 1 left the demo's student at the baseline's mIoU, weight 7 trained it).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from segkd.losses.base import LOSSES, DistillBatch, DistillLoss, DistillSpec
from segkd.losses.functional.common import check_rank
from segkd.models.outputs import SegOutput

PseudoLabelImages = Literal["unlabeled", "all"]
PseudoLabelNormalize = Literal["all", "confident", "labeled"]


def pseudo_label_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    size: tuple[int, int],
    threshold: float = 0.95,
    normalize: PseudoLabelNormalize = "all",
    labelled_images: int | None = None,
) -> Tensor:
    """Masked cross-entropy of the student to the teacher's arg-max labels (see the module docstring).

    Args:
        student_logits: (N, K, h_s, w_s).
        teacher_logits: (N, K, h_t, w_t), detached by the caller.
        size: (H, W), the label resolution both maps are upsampled to.
        threshold: tau in [0, 1]; a pixel counts when the teacher's top probability is >= tau.
        normalize: ``"all"`` (FixMatch: divide by N*H*W), ``"confident"`` (by the confident pixels; 0
            when there is none) or ``"labeled"`` (by ``labelled_images`` * H * W; at least one image).
        labelled_images: n_l, the labelled images of the whole batch (``"labeled"`` only; None: N).

    Returns:
        A scalar tensor.
    """
    check_rank(student_logits, 4, "pseudo_label student_logits")
    check_rank(teacher_logits, 4, "pseudo_label teacher_logits")
    if student_logits.shape[1] != teacher_logits.shape[1]:
        raise ValueError(
            f"pseudo_label: student has {student_logits.shape[1]} classes, teacher {teacher_logits.shape[1]}"
        )
    s = _upsample(student_logits, size)
    with torch.no_grad():
        t = teacher_logits.detach()
        t = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t  # no half-precision softmax
        probs = _upsample(t, size).softmax(dim=1)
        confidence, target = probs.max(dim=1)  # (N, H, W)
        mask = (confidence >= threshold).to(s.dtype)
    per_pixel = F.cross_entropy(s, target, reduction="none")  # (N, H, W)
    masked = per_pixel * mask
    if normalize == "all":
        return masked.mean()
    if normalize == "labeled":
        n_l = per_pixel.shape[0] if labelled_images is None else labelled_images
        return masked.sum() / (max(n_l, 1) * per_pixel.shape[-2] * per_pixel.shape[-1])
    return masked.sum() / mask.sum().clamp(min=1.0)


def _upsample(logits: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


@LOSSES.register("pseudo_label")
class PseudoLabelCE(DistillLoss):
    """Hard pseudo-labels from the teacher with a confidence threshold (FixMatch; Naive-Student at tau 0).

    Options: ``threshold`` (tau, default 0.95 as FixMatch), ``images`` (``unlabeled`` default, or ``all``),
    ``normalize`` (``all`` default as FixMatch, ``confident``, or ``labeled``: per labelled image, the
    unlabelled-image bundle's rule). See :func:`pseudo_label_loss`.
    """

    uses_labels = False

    def __init__(self, spec: DistillSpec, threshold: float = 0.95, images: PseudoLabelImages = "unlabeled",
                 normalize: PseudoLabelNormalize = "all") -> None:
        super().__init__()
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"pseudo_label: option 'threshold' must be in [0, 1], got {threshold}")
        if images not in ("unlabeled", "all"):
            raise ValueError(f"pseudo_label: option 'images' must be 'unlabeled' or 'all', got {images!r}")
        if normalize not in ("all", "confident", "labeled"):
            raise ValueError(
                f"pseudo_label: option 'normalize' must be 'all', 'confident' or 'labeled', got {normalize!r}"
            )
        self.threshold = float(threshold)
        self.images = images
        self.normalize = normalize

    def routed_images(self) -> str:
        return self.images

    def teacher_reads(self) -> frozenset[str]:
        return frozenset({"logits"})

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        size = (int(batch.images.shape[-2]), int(batch.images.shape[-1]))  # = the labels' (H, W)
        return pseudo_label_loss(student.logits, teacher.logits, size, self.threshold, self.normalize,
                                 batch.labelled_images)
