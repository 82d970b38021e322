"""Confusion-matrix segmentation metrics: mIoU, per-class IoU, pixel accuracy, mean accuracy.

The matrix is accumulated over a whole split (not averaged per image), as in the Cityscapes / CIRKD
evaluation: ``conf[g, p]`` counts pixels of ground-truth class ``g`` predicted as ``p``; pixels labelled
``ignore_index`` are never counted. Under DDP the per-rank matrices are summed with one all-reduce.

    IoU_k   = conf[k,k] / (sum_p conf[k,p] + sum_g conf[g,k] - conf[k,k])
    mIoU    = mean of IoU_k over classes present in ground truth or prediction (union > 0)
    pixAcc  = trace(conf) / sum(conf)
    mAcc    = mean over classes with ground truth of conf[k,k] / sum_p conf[k,p]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from segkd.distributed import all_reduce
from segkd.labels import IGNORE_INDEX


def confusion_matrix(
    pred: Tensor, label: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Confusion matrix (K, K) int64 of ``pred`` vs ``label``, both (N, H, W) or any equal shape.

    Pixels with ``label == ignore_index`` (or any label outside [0, K)) are skipped. Uses
    ``torch.bincount`` on ``K * label + pred``.
    """
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != label shape {tuple(label.shape)}")
    label = label.reshape(-1).long()
    pred = pred.reshape(-1).long()
    valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
    index = num_classes * label[valid] + pred[valid].clamp(0, num_classes - 1)
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


class SegMetric:
    """Accumulates a confusion matrix over batches and turns it into metrics."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, label: Tensor) -> None:
        """Add a batch: ``pred`` and ``label`` class ids of equal shape."""
        self.conf += confusion_matrix(pred, label, self.num_classes, self.ignore_index)

    def reduce(self, device: torch.device | str = "cpu") -> None:
        """Sum the matrix over all DDP ranks (no-op in one process). ``device``: where the collective runs."""
        conf = self.conf.to(device)
        all_reduce(conf, "sum")
        self.conf = conf.cpu()

    def compute(self, class_names: list[str] | None = None) -> dict[str, Any]:
        """Metrics (percent): ``miou``, ``pixel_acc``, ``mean_acc``, ``per_class_iou`` (None if absent)."""
        return metrics_from_confusion(self.conf, class_names)


def metrics_from_confusion(conf: Tensor, class_names: list[str] | None = None) -> dict[str, Any]:
    """Metrics (percent) from a (K, K) confusion matrix; classes with empty union get IoU None."""
    conf = conf.double()
    tp = conf.diag()
    gt = conf.sum(1)
    union = gt + conf.sum(0) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    has_gt = gt > 0
    acc = torch.where(has_gt, tp / gt.clamp(min=1), torch.zeros_like(tp))
    total = conf.sum()
    names = class_names or [str(k) for k in range(conf.shape[0])]
    return {
        "miou": 100.0 * iou[present].mean().item() if present.any() else 0.0,
        "pixel_acc": 100.0 * (tp.sum() / total).item() if total > 0 else 0.0,
        "mean_acc": 100.0 * acc[has_gt].mean().item() if has_gt.any() else 0.0,
        "per_class_iou": {
            n: (100.0 * v if p else None) for n, v, p in zip(names, iou.tolist(), present.tolist())
        },
        "class_names": list(names),
        "num_pixels": int(total.item()),
    }
