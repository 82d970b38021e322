"""``segkd report``: compare finished runs in one table and three figures.

Outputs in ``out_dir``: ``report.md`` (table + figures + notes), ``runs.csv``, ``tradeoff.png`` (mIoU vs
latency and vs GMACs), ``class_gain.png`` (per-class IoU gain over the same student's baseline) and
``qualitative.png`` (the same validation images predicted by every run; see :mod:`.qualitative`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segkd.report.runs import Run, load_run

__all__ = ["Run", "load_run", "make_report"]


def make_report(run_dirs: Sequence[str | Path], out_dir: str | Path, num_images: int = 3,
                qualitative: bool = True) -> Path:
    """Write the comparison report of ``run_dirs`` into ``out_dir``; returns the path of ``report.md``."""
    from segkd.report import plots, table

    if not run_dirs:
        raise ValueError("segkd report: give at least one run directory")
    runs = [load_run(p) for p in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.write_csv(runs, out / "runs.csv")
    figures = {
        "Accuracy vs cost": plots.plot_tradeoff(runs, out / "tradeoff.png"),
        "Per-class IoU gain over the baseline": plots.plot_class_gains(runs, out / "class_gain.png"),
    }
    notes: list[str] = []
    if qualitative:
        figures["Same validation images, every run"], notes = _qualitative(runs, out, num_images)
    return _write_markdown(runs, figures, notes, out / "report.md")


def _qualitative(runs: list[Run], out: Path, num_images: int) -> tuple[Path | None, list[str]]:
    from segkd.report.plots import plot_grid
    from segkd.report.qualitative import grid_columns

    try:
        columns, notes = grid_columns(runs, num_images)
    except (FileNotFoundError, ValueError, KeyError) as err:
        return None, [f"qualitative grid skipped: {err}"]
    return plot_grid(columns, out / "qualitative.png"), notes


def _write_markdown(runs: list[Run], figures: dict[str, Path | None], notes: list[str], path: Path) -> Path:
    from segkd.report.table import markdown

    lines = ["# segkd report", "", markdown(runs), "",
             "gain = mIoU minus the mIoU of the baseline run of the same student model (n/a without one); "
             "params and GMACs are the deployment counts of `summary.json`; latency is the median CPU "
             "latency measured by the engine at the crop size.", ""]
    for title, figure in figures.items():
        body = f"![{title}]({figure.name})" if figure else "(not enough data to plot)"
        lines += [f"## {title}", "", body, ""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    path.write_text("\n".join(lines))
    return path
