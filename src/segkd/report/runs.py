"""Read finished run directories (``summary.json``, ``eval/metrics.json``, ``config.yaml``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkd.rundir import RunDir

BASELINE = "baseline"


@dataclass
class Run:
    """One finished run: its directory, ``summary.json`` and ``eval/metrics.json`` (may be empty)."""

    path: Path
    summary: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.summary.get("name") or self.path.name)

    @property
    def model(self) -> str:
        return str(self.summary.get("model", "?"))

    @property
    def method(self) -> str:
        return str(self.summary.get("method") or BASELINE)

    @property
    def miou(self) -> float | None:
        value = self.summary.get("miou", self.metrics.get("miou"))
        return None if value is None else float(value)

    @property
    def per_class_iou(self) -> dict[str, float | None]:
        return dict(self.metrics.get("per_class_iou") or {})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from err


def load_run(path: str | Path) -> Run:
    """Load one run directory; ``summary.json`` is required, ``eval/metrics.json`` optional."""
    path = Path(path)
    run = RunDir(path)
    if not run.summary.is_file():
        raise FileNotFoundError(f"{path}: no summary.json (not a finished segkd run directory)")
    metrics_path = run.eval / "metrics.json"
    metrics = _read_json(metrics_path) if metrics_path.is_file() else {}
    return Run(path, _read_json(run.summary), metrics)


def baseline_of(run: Run, runs: list[Run]) -> Run | None:
    """The baseline (method ``baseline``) run of the same model, if one is among ``runs``."""
    for other in runs:
        if other.method == BASELINE and other.model == run.model:
            return other
    return None


def miou_gain(run: Run, runs: list[Run]) -> float | None:
    """mIoU minus the mIoU of the same student's baseline (None without a baseline)."""
    base = baseline_of(run, runs)
    if base is None or base.miou is None or run.miou is None:
        return None
    return run.miou - base.miou


def class_gains(run: Run, base: Run) -> dict[str, float]:
    """Per-class IoU gain over ``base`` for the classes both runs scored."""
    ref = base.per_class_iou
    return {name: iou - ref[name] for name, iou in run.per_class_iou.items()
            if iou is not None and ref.get(name) is not None}
