"""``segkd data check``: scan a dataset, report counts, class frequencies, image sizes and every problem.

Unlike loading for training (which stops at the first bad file), the scan collects all problems: unpaired
files found when listing the layout, unreadable or corrupt files, image/label size mismatches and label
values outside ``[0, K)`` other than ignore, each with its file path.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from segkd.data.base import DatasetError, SegDataset
from segkd.data.registry import DATASETS
from segkd.labels import IGNORE_INDEX

BAR_WIDTH = 40


@dataclass
class CheckReport:
    """What a scan found in one split."""

    name: str
    split: str
    class_names: tuple[str, ...]
    num_samples: int = 0
    num_ok: int = 0
    pixel_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # K + 1 (ignore)
    min_size: tuple[int, int] | None = None  # (H, W)
    max_size: tuple[int, int] | None = None
    problems: list[str] = field(default_factory=list)

    def add_sample(self, label: np.ndarray) -> None:
        """Count one good sample's label pixels (ignore goes into the last bin) and size."""
        k = len(self.class_names)
        clipped = np.where(label == IGNORE_INDEX, k, label)
        self.pixel_counts += np.bincount(clipped.ravel(), minlength=k + 1)[: k + 1]
        size = tuple(int(s) for s in label.shape)
        self.min_size = size if self.min_size is None else tuple(map(min, self.min_size, size))  # type: ignore[assignment]
        self.max_size = size if self.max_size is None else tuple(map(max, self.max_size, size))  # type: ignore[assignment]
        self.num_ok += 1


def open_for_check(name: str, root: str | None, split: str, options: dict[str, Any]) -> SegDataset:
    """Build the dataset without failing on layout problems (they are collected in ``dataset.problems``)."""
    factory = DATASETS.get(name)
    kwargs = dict(options)
    if "strict" in inspect.signature(factory).parameters:
        kwargs["strict"] = False
    from segkd.data.registry import build_dataset

    return build_dataset(name, root, split, **kwargs)


def scan(dataset: SegDataset, name: str, split: str, progress: bool = True) -> CheckReport:
    """Read every sample of ``dataset`` (raw, no transform) and collect statistics and problems."""
    report = CheckReport(name, split, dataset.class_names, num_samples=len(dataset))
    report.pixel_counts = np.zeros(dataset.num_classes + 1, dtype=np.int64)
    report.problems.extend(dataset.problems)
    for index in tqdm(range(len(dataset)), desc=f"checking {name}/{split}", disable=not progress):
        try:
            _, label, _ = dataset.load(index)
        except DatasetError as err:
            report.problems.append(str(err))
            continue
        report.add_sample(label)
    return report


def format_report(report: CheckReport) -> str:
    """Human-readable summary: counts, size range, class histogram, then every problem."""
    lines = [
        f"dataset {report.name}, split {report.split}: {report.num_samples} samples, "
        f"{report.num_ok} readable, {len(report.problems)} problem(s)",
        f"image size (HxW): min {_size(report.min_size)}, max {_size(report.max_size)}",
        "class frequency (share of labelled pixels):",
    ]
    counts = report.pixel_counts
    labelled = max(int(counts[:-1].sum()), 1)
    width = max((len(n) for n in report.class_names), default=5)
    for k, class_name in enumerate(report.class_names):
        share = counts[k] / labelled
        lines.append(f"  {k:3d} {class_name:<{width}} {share:7.2%} {'#' * round(share * BAR_WIDTH)}")
    total = max(int(counts.sum()), 1)
    lines.append(f"  ignore (255): {counts[-1] / total:.2%} of all pixels")
    if report.problems:
        lines.append("problems:")
        lines += [f"  - {problem}" for problem in report.problems]
    return "\n".join(lines)


def _size(size: tuple[int, int] | None) -> str:
    return "-" if size is None else f"{size[0]}x{size[1]}"
