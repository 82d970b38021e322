"""Figures of ``segkd report``: accuracy/cost trade-off, per-class IoU gain, qualitative grid."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from segkd.outputs import write_figure  # noqa: E402
from segkd.report.runs import BASELINE, Run, baseline_of, class_gains  # noqa: E402


def plot_tradeoff(runs: list[Run], path: Path) -> Path | None:
    """mIoU against CPU latency and against GMACs, one marker per run, labelled by method."""
    axes_spec = [("latency_ms", "latency (ms, CPU)", 1.0), ("macs", "GMACs", 1e9)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    models = sorted({r.model for r in runs})
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    plotted = False
    for ax, (key, xlabel, scale) in zip(axes, axes_spec):
        for run in runs:
            x = run.summary.get(key)
            if x is None or run.miou is None:
                continue
            marker = "s" if run.method == BASELINE else "o"
            ax.scatter(float(x) / scale, run.miou, color=colours[run.model], marker=marker, s=50)
            ax.annotate(run.method, (float(x) / scale, run.miou), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
            plotted = True
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mIoU (%)")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[m], marker="o", linestyle="", label=m) for m in models]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(models), 4), fontsize=8)
    fig.suptitle("accuracy vs cost (squares: baselines)", y=0.02, fontsize=9)
    return _save(fig, path) if plotted else _discard(fig)


def plot_class_gains(runs: list[Run], path: Path) -> Path | None:
    """Per-class IoU gain of every distilled run over its student's baseline (grouped bars)."""
    pairs = [(r, baseline_of(r, runs)) for r in runs if r.method != BASELINE]
    gains = {r.label: class_gains(r, b) for r, b in pairs if b is not None}
    gains = {k: v for k, v in gains.items() if v}
    if not gains:
        return None
    classes = list(next(iter(gains.values())))
    width = 0.8 / len(gains)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(classes) * max(1, len(gains) / 2)), 4))
    for i, (label, gain) in enumerate(gains.items()):
        ax.bar(np.arange(len(classes)) + i * width, [gain.get(c, 0.0) for c in classes], width, label=label)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU gain over baseline (points)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_grid(columns: dict[str, list[np.ndarray]], path: Path) -> Path | None:
    """Rows = images, columns = ``{title: [H x W x 3 uint8 per image]}`` (image, ground truth, runs)."""
    if not columns:
        return None
    titles = list(columns)
    n = len(columns[titles[0]])
    fig, axes = plt.subplots(n, len(titles), figsize=(2.4 * len(titles), 2.0 * n), squeeze=False)
    for c, title in enumerate(titles):
        for r in range(n):
            axes[r][c].imshow(columns[title][r])
            axes[r][c].axis("off")
        axes[0][c].set_title(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    return write_figure(path, fig, dpi=110, bbox_inches="tight")


def _discard(fig) -> None:
    plt.close(fig)
    return None
