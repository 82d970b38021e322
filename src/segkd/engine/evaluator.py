"""Evaluate a segmentor over a validation loader and write metrics, table and plots.

Writes into ``out_dir`` (``RUN_DIR/eval`` by convention): ``metrics.json``, ``metrics.txt`` (readable
table with class names), ``per_class_iou.png`` (bar chart) and ``predictions.png`` (image / ground truth
/ prediction grid coloured with the dataset palette). Confusion matrices are summed over DDP ranks;
only rank 0 writes files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from segkd.config_schema import EvalConfig, InputConfig
from segkd.distributed import is_main_process
from segkd.engine.inference import predict_logits
from segkd.engine.metrics import SegMetric
from segkd.labels import IGNORE_INDEX
from segkd.outputs import write_figure, write_text


def run_evaluation(
    model: nn.Module,
    loader: Any,
    cfg: EvalConfig,
    num_classes: int,
    device: torch.device,
    class_names: list[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
    keep: int = 0,
    reduce: bool = True,
) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    """Metrics over ``loader`` (summed across ranks when ``reduce``) and up to ``keep`` samples to show.

    Each kept sample is ``{"image": (3, H, W) float normalised, "label": (H, W), "pred": (H, W)}``.
    """
    was_training = model.training
    model.eval()
    metric = SegMetric(num_classes, ignore_index)
    samples: list[dict[str, np.ndarray]] = []
    seen = 0
    for batch in loader:
        if cfg.max_images and seen >= cfg.max_images:
            break
        images = batch["image"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        pred = predict_logits(model, images, cfg, num_classes).argmax(1)
        metric.update(pred, labels)
        seen += images.shape[0]
        for i in range(min(images.shape[0], keep - len(samples))):
            samples.append(
                {
                    "image": images[i].cpu().numpy(),
                    "label": labels[i].cpu().numpy(),
                    "pred": pred[i].cpu().numpy(),
                }
            )
    if reduce:
        metric.reduce(device if device.type == "cuda" else "cpu")
    model.train(was_training)
    result = metric.compute(class_names)
    result["mode"] = cfg.mode
    result["scales"] = list(cfg.scales) if cfg.mode == "multiscale" else [1.0]
    result["flip"] = cfg.flip
    return result, samples


def format_table(metrics: dict[str, Any]) -> str:
    """Readable per-class IoU table followed by the summary metrics."""
    width = max([len(n) for n in metrics["class_names"]] + [5])
    lines = [f"{'class':<{width}}  IoU (%)", f"{'-' * width}  -------"]
    for name, iou in metrics["per_class_iou"].items():
        lines.append(f"{name:<{width}}  {'n/a' if iou is None else f'{iou:7.2f}'}")
    lines += [
        "",
        f"mIoU {metrics['miou']:.2f}   pixel acc {metrics['pixel_acc']:.2f}   "
        f"mean acc {metrics['mean_acc']:.2f}   mode {metrics['mode']}",
    ]
    return "\n".join(lines)


def colorize(label: np.ndarray, palette: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours; ignored pixels black."""
    out = np.zeros((*label.shape, 3), dtype=np.uint8)
    valid = (label != ignore_index) & (label < len(palette))
    out[valid] = palette[label[valid]]
    return out


def denormalize(image: np.ndarray, convention: InputConfig) -> np.ndarray:
    """(3, H, W) network input in ``convention`` -> (H, W, 3) RGB float in [0, 1]."""
    from segkd.input_convention import denormalize as to_unit_rgb

    return np.clip(to_unit_rgb(np.asarray(image), convention).transpose(1, 2, 0), 0.0, 1.0)


def plot_per_class_iou(metrics: dict[str, Any], path: Path) -> Path:
    """Bar chart of per-class IoU with the mIoU as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics["per_class_iou"])
    values = [v or 0.0 for v in metrics["per_class_iou"].values()]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(names) + 1), 3.5))
    ax.bar(range(len(names)), values, color="tab:blue")
    ax.axhline(metrics["miou"], color="tab:red", linestyle="--", label=f"mIoU {metrics['miou']:.1f}")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return write_figure(path, fig, dpi=100)


def plot_predictions(
    samples: list[dict[str, np.ndarray]],
    palette: np.ndarray,
    convention: InputConfig,
    path: Path,
    ignore_index: int = IGNORE_INDEX,
) -> Path | None:
    """Grid of rows image / ground truth / prediction; None when there is nothing to show."""
    if not samples:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(samples), 3, figsize=(9, 3 * len(samples)), squeeze=False)
    for row, sample in zip(axes, samples):
        panels = (
            denormalize(sample["image"], convention),
            colorize(sample["label"], palette, ignore_index),
            colorize(sample["pred"], palette, ignore_index),
        )
        for ax, panel, title in zip(row, panels, ("image", "ground truth", "prediction")):
            ax.imshow(panel)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    return write_figure(path, fig, dpi=80)


def write_eval_outputs(
    metrics: dict[str, Any],
    samples: list[dict[str, np.ndarray]],
    out_dir: Path,
    palette: np.ndarray,
    convention: InputConfig,
    ignore_index: int = IGNORE_INDEX,
) -> None:
    """metrics.json, metrics.txt and both plots into ``out_dir`` (rank 0 only)."""
    if not is_main_process():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    write_text(out_dir / "metrics.txt", format_table(metrics) + "\n")
    plot_per_class_iou(metrics, out_dir / "per_class_iou.png")
    plot_predictions(
        samples, np.asarray(palette, dtype=np.uint8), convention, out_dir / "predictions.png", ignore_index
    )


def to_numpy_palette(palette: Any) -> np.ndarray:
    """Palette as a (K, 3) uint8 array (accepts tensors and lists)."""
    if isinstance(palette, Tensor):
        palette = palette.cpu().numpy()
    return np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
