"""``segkd report``: compare finished runs in one table and three figures.

Outputs in ``out_dir`` (``out_dir-2``, ``-3`` ... when it holds an earlier report, which is never replaced):
``report.md`` (table + figures + notes), ``runs.csv``, ``tradeoff.png`` (mIoU vs latency and vs GMACs),
``class_gain.png`` (per-class IoU gain over the same student's baseline) and ``qualitative.png`` (the same
validation images predicted by every run; see :mod:`.qualitative`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segkd.outputs import new_output, write_text
from segkd.report.runs import Run, load_run

__all__ = ["Run", "load_run", "make_report"]


def make_report(run_dirs: Sequence[str | Path], out_dir: str | Path, num_images: int = 3,
                qualitative: bool = True) -> Path:
    """Write the comparison report of ``run_dirs`` into ``out_dir`` (``out_dir-2``, ``-3`` ... when it holds
    an earlier report, which is kept); returns the path of ``report.md``."""
    from segkd.report import plots, table

    if not run_dirs:
        raise ValueError("segkd report: give at least one run directory")
    out = new_output(out_dir, "report", folder=True)
    runs, skipped = _load_runs(run_dirs)
    if not runs:
        raise ValueError(f"segkd report: none of the {len(run_dirs)} paths is a finished run ({skipped[0]})")
    out.mkdir(parents=True, exist_ok=True)
    table.write_csv(runs, out / "runs.csv")
    figures = {
        "Accuracy vs cost": plots.plot_tradeoff(runs, out / "tradeoff.png"),
        "Per-class IoU gain over the baseline": plots.plot_class_gains(runs, out / "class_gain.png"),
    }
    notes = [f"skipped {note}" for note in skipped]
    if qualitative:
        figures["Same validation images, every run"], grid_notes = _qualitative(runs, out, num_images)
        notes += grid_notes
    return _write_markdown(runs, figures, notes, out / "report.md")


def _load_runs(paths: Sequence[str | Path]) -> tuple[list[Run], list[str]]:
    """The finished runs among ``paths`` and one note per path that is not one (printed as it is met),
    so that a shell glob such as ``runs/demo/*`` may include files and the report folder itself."""
    runs, skipped = [], []
    for path in paths:
        try:
            runs.append(load_run(path))
        except (FileNotFoundError, ValueError) as err:
            skipped.append(str(err))
            print(f"segkd report: skipping {err}")
    return runs, skipped


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
    return write_text(path, "\n".join(lines))
