"""The demo's comparison table (console + Markdown) and report files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segkd.rundir import RunDir

COLUMNS = ("model", "method", "params", "MMACs", "CPU ms", "val mIoU", "gain", "train s", "overhead")


def comparison_rows(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """One dict per run from its summary.json, with gain and time overhead over the ``baseline`` run."""
    summaries = [json.loads(RunDir(r).summary.read_text()) | {"run_dir": str(r)} for r in run_dirs]
    base = next((s for s in summaries if s["method"] == "baseline"), None)
    for s in summaries:
        student = base is not None and s["model"] == base["model"]
        s["gain"] = s["miou"] - base["miou"] if student else None
        s["overhead"] = (
            s["train_time_s"] / base["train_time_s"] - 1 if student and base["train_time_s"] else None
        )
    return summaries


def _fmt(row: dict[str, Any]) -> list[str]:
    def num(v: Any, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    return [
        row["model"],
        row["method"],
        num(row["params"], ","),
        num(None if row["macs"] is None else row["macs"] / 1e6, ".1f"),
        num(row["latency_ms"], ".2f"),
        num(row["miou"], ".2f"),
        num(row["gain"], "+.2f"),
        num(row["train_time_s"], ".1f"),
        "n/a" if row["overhead"] is None else f"{100 * row['overhead']:+.0f}%",
    ]


def format_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width text table of :data:`COLUMNS`."""
    cells = [list(COLUMNS)] + [_fmt(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The same table as GitHub Markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r)) + " |" for r in rows]
    return "\n".join(lines)


def teacher_gap(rows: list[dict[str, Any]]) -> float | None:
    """Teacher mIoU minus baseline student mIoU."""
    by_method = {r["method"]: r for r in rows}
    if "teacher" not in by_method or "baseline" not in by_method:
        return None
    return by_method["teacher"]["miou"] - by_method["baseline"]["miou"]


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n" + format_table(rows))
    gap = teacher_gap(rows)
    if gap is not None:
        print(f"\nteacher - baseline student: {gap:+.2f} mIoU")


def _plot_miou(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(rows), 3.5))
    # Short run names (kd, skd, cirkd, ...) as labels: the full term lists do not fit under a bar.
    ax.bar([r.get("name") or r["method"] for r in rows], [r["miou"] for r in rows], color="tab:blue")
    ax.set_ylabel("val mIoU (%)")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_demo_report(
    run_dirs: list[Path],
    rows: list[dict[str, Any]],
    out: Path,
    skipped: list[dict[str, Any]],
    total_s: float,
    budget: Any,
) -> Path:
    """``segkd report`` files for all runs plus the demo's own section."""
    from segkd.report import make_report

    report = make_report(run_dirs, out)
    head = report.read_text()
    plot = _plot_miou(rows, out / "demo_miou.png")
    gap = teacher_gap(rows)
    lines = [
        head,
        "## Demo summary",
        "",
        markdown_table(rows),
        "",
        f"Teacher minus baseline student: {'n/a' if gap is None else f'{gap:+.2f}'} mIoU. "
        f"Total demo wall-clock: {total_s:.0f} s. Budget: {budget}.",
        "",
        "gain = mIoU over the baseline student; overhead = training time relative to the baseline "
        "(Knowledge Adaptation includes its auto-encoder stage).",
        "",
        f"![val mIoU]({plot.name})",
        "",
    ]
    lines += [
        f"- skipped {s['method']}: loss terms not registered: {', '.join(s['missing'])}" for s in skipped
    ]
    report.write_text("\n".join(lines) + "\n")
    (out / "demo_results.json").write_text(
        json.dumps({"rows": rows, "skipped": skipped, "teacher_gap": gap, "total_time_s": total_s}, indent=2)
    )
    return report
