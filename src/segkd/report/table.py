"""The comparison table of ``segkd report`` as Markdown and CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from segkd.outputs import write_text
from segkd.report.runs import Run, miou_gain

COLUMNS = ["run", "model", "method", "params (M)", "GMACs", "latency (ms)", "mIoU", "gain", "train time (s)"]


def _scaled(value: object, scale: float) -> float | None:
    return None if value is None else float(value) / scale


def rows(runs: list[Run]) -> list[list[object]]:
    """One row per run, in the order of :data:`COLUMNS` (None where a value is unknown)."""
    out = []
    for run in runs:
        s = run.summary
        out.append([run.label, run.model, run.method, _scaled(s.get("params"), 1e6),
                    _scaled(s.get("macs"), 1e9), s.get("latency_ms"), run.miou,
                    miou_gain(run, runs), s.get("train_time_s")])
    return out


def _cell(value: object, column: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if column == "gain":
            return f"{value:+.2f}"
        return f"{value:.4g}" if column in ("params (M)", "GMACs") else f"{value:.2f}"
    return str(value)


def markdown(runs: list[Run]) -> str:
    """GitHub-Markdown table; the gain column is signed."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows(runs):
        cells = [_cell(v, column) for v, column in zip(row, COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(runs: list[Run], path: Path) -> Path:
    """The same table as CSV (empty cells where unknown)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    writer.writerows([["" if v is None else v for v in row] for row in rows(runs)])
    return write_text(path, text.getvalue())
