"""The comparison's outputs: ``compare.json`` (every run and every statistic), ``compare.md`` (one table
per matching) and plots (mIoU per method with every seed, gain with its 95 % interval, mIoU against
training cost for each matching).

Per matching and method: val mIoU mean ± std over seeds, the gain over the baseline paired by seed with
its 95 % confidence interval (:mod:`segkd.compare.stats`), mean training seconds and iterations, and the
step ratio (the method's seconds per iteration over the baseline's, same seed and matching).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from segkd.compare.plan import BASELINE  # noqa: E402
from segkd.compare.runner import RunResult, results_as_dicts  # noqa: E402
from segkd.compare.stats import paired_gain, summarize  # noqa: E402
from segkd.outputs import write_figure, write_text  # noqa: E402


def analyse(results: list[RunResult]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{match: {method: row}}``; a row holds ``miou`` (per seed), ``mean``, ``std``, ``gain`` (paired
    statistics, None for the baseline), ``train_time_s``, ``iters``, ``step_ratio`` (means)."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for match in dict.fromkeys(r.match for r in results):
        runs = [r for r in results if r.match == match]
        base = {r.seed: r for r in runs if r.method == BASELINE}
        rows: dict[str, dict[str, Any]] = {}
        for method in dict.fromkeys(r.method for r in runs):
            mine = {r.seed: r for r in runs if r.method == method}
            miou = summarize([r.miou for r in mine.values()])
            gain = None
            if method != BASELINE and base.keys() & mine.keys():
                gain = paired_gain({s: r.miou for s, r in mine.items()}, {s: r.miou for s, r in base.items()})
            ratios = [mine[s].step_s / base[s].step_s for s in mine if s in base and base[s].step_s > 0]
            planned = [r.planned_ratio for r in mine.values() if r.planned_ratio is not None]
            rows[method] = {
                "miou": {str(s): r.miou for s, r in sorted(mine.items())},
                "mean": miou.mean,
                "std": miou.std,
                "n": miou.n,
                "gain": None if gain is None else gain.as_dict(),
                "train_time_s": summarize([r.train_time_s for r in mine.values()]).mean,
                "iters": summarize([float(r.iters) for r in mine.values()]).mean,
                "step_ratio": summarize(ratios).mean if ratios else None,
                "planned_ratio": planned[0] if planned else None,  # time-matched by ratio
                "cache_s": summarize([r.cache_s for r in mine.values()]).mean,
            }
        if BASELINE in rows and any(row["planned_ratio"] is not None for row in rows.values()):
            rows[BASELINE]["planned_ratio"] = 1.0  # the unit of the budget
        table[match] = rows
    return table


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _gain_cell(gain: dict[str, Any] | None) -> tuple[str, str]:
    if gain is None:
        return "", ""
    if gain["ci_low"] is None:
        return f"{gain['mean']:+.2f} (1 seed: no interval)", "n/a"
    cell = f"{gain['mean']:+.2f} [{gain['ci_low']:+.2f}, {gain['ci_high']:+.2f}]"
    verdict = "yes" if gain["significant"] else ("no (hurts)" if gain["ci_high"] < 0 else "not shown")
    return cell, verdict


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    """One matching's table (GitHub Markdown)."""
    cached = any(row.get("cache_s") for row in rows.values())
    planned = any(row.get("planned_ratio") is not None for row in rows.values())
    lines = [
        "| method | seeds | val mIoU (mean ± std) | gain over baseline [95% CI] | helps? | train s | iters "
        "| step ratio |"
        + (" matched ratio |" if planned else "")
        + (" teacher cache s (once) |" if cached else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if planned else "") + ("---|" if cached else ""),
    ]
    for method, row in rows.items():
        gain, verdict = _gain_cell(row["gain"])
        ratio = "" if row["step_ratio"] is None else f"{row['step_ratio']:.2f}"
        matched = ""
        if planned:
            matched = " clock |" if row.get("planned_ratio") is None else f" {row['planned_ratio']:.2f} |"
        cache = (f" {row['cache_s']:.1f} |" if row.get("cache_s") else " |") if cached else ""
        lines.append(
            f"| {method} | {row['n']} | {_pm(row['mean'], row['std'])} | {gain} | {verdict} "
            f"| {row['train_time_s']:.1f} | {row['iters']:.0f} | {ratio} |{matched}{cache}"
        )
    return "\n".join(lines)


def print_tables(table: dict[str, dict[str, dict[str, Any]]]) -> None:
    for match, rows in table.items():
        print(f"\n{match}-matched:\n{markdown_table(rows)}")


def write_outputs(
    results: list[RunResult], out: Path, header: dict[str, Any], notes: list[str] | None = None
) -> dict[str, Any]:
    """Write ``compare.json``, ``compare.md`` and the plots into ``out``; returns the JSON data."""
    out.mkdir(parents=True, exist_ok=True)
    table = analyse(results)
    data = {
        **header,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "results": table,
        "notes": notes or [],
        "runs": results_as_dicts(results),
    }
    write_text(out / "compare.json", json.dumps(data, indent=2))
    figures = plot_all(results, table, out)
    write_text(out / "compare.md", _markdown(data, table, figures, notes or []))
    return data


_MATCH_TEXT = {
    "iters": "equal iterations (every run trains the same number of steps)",
    "time": "equal compute (every run gets the wall-clock time of the same number of plain student steps)",
}


def _markdown(data: dict[str, Any], table: dict[str, Any], figures: list[Path], notes: list[str]) -> str:
    parts = [f"# segkd compare: {data.get('title', 'comparison')}", ""]
    if data.get("command"):
        parts += ["```", data["command"], "```", ""]
    parts.append(
        "Gain: the method's val mIoU minus the baseline's of the same seed, mean over seeds with its 95 % "
        "Student-t confidence interval; *helps* when the whole interval is above zero. Step ratio: seconds "
        "per iteration over the baseline's (same seed). Matched ratio: the step ratio measured once per "
        "method before training (its iteration's cost over a baseline iteration's, timed alternately); a "
        "time-matched run trains budget / matched ratio iterations (*clock*: the run charged its own clock)."
    )
    for match, rows in table.items():
        parts += ["", f"## {_MATCH_TEXT.get(match, match)}", "", markdown_table(rows)]
    parts += ["", f"Machine: {data['machine']['platform']} ({data['machine']['processor']})."]
    parts += [f"- {n}" for n in notes]
    parts += [""] + [f"![{f.stem}]({f.name})" for f in figures]
    return "\n".join(parts) + "\n"


def plot_all(results: list[RunResult], table: dict[str, Any], out: Path) -> list[Path]:
    """``miou_<match>.png`` (every seed and the mean ± std per method), ``gain_<match>.png`` (gain with
    its interval), ``cost.png`` (mIoU against training seconds, every run, both matchings)."""
    figures = []
    for match, rows in table.items():
        figures.append(_plot_miou(match, rows, out / f"miou_{match}.png"))
        if len(rows) > 1:
            figures.append(_plot_gain(match, rows, out / f"gain_{match}.png"))
    figures.append(_plot_cost(results, out / "cost.png"))
    return figures


def _plot_miou(match: str, rows: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 3.6))
    for x, row in enumerate(rows.values()):
        values = list(row["miou"].values())
        ax.scatter([x] * len(values), values, color="0.6", s=14, zorder=2)
        ax.errorbar(x, row["mean"], yerr=row["std"] or 0, fmt="o", color="C0", capsize=4, zorder=3)
    ax.set_xticks(range(len(rows)), list(rows), rotation=30, ha="right")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title(f"{match}-matched: every seed (grey), mean ± std", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _plot_gain(match: str, rows: dict[str, Any], path: Path) -> Path:
    methods = [m for m, r in rows.items() if r["gain"] is not None]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * max(len(methods), 1), 3.6))
    for x, method in enumerate(methods):
        g = rows[method]["gain"]
        low = g["mean"] - g["ci_low"] if g["ci_low"] is not None else 0
        high = g["ci_high"] - g["mean"] if g["ci_high"] is not None else 0
        colour = (
            "C2" if g["significant"] else ("C3" if g["ci_high"] is not None and g["ci_high"] < 0 else "0.4")
        )
        ax.errorbar(x, g["mean"], yerr=[[low], [high]], fmt="o", color=colour, capsize=4)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel("gain over baseline (mIoU)")
    ax.set_title(f"{match}-matched: paired gain, 95% CI", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _plot_cost(results: list[RunResult], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    methods = list(dict.fromkeys(r.method for r in results))
    markers = {"iters": "o", "time": "s"}
    for i, method in enumerate(methods):
        for match, marker in markers.items():
            runs = [r for r in results if r.method == method and r.match == match]
            if runs:
                ax.scatter(
                    [r.train_time_s + r.cache_s for r in runs],  # a cached row pays its cache once
                    [r.miou for r in runs],
                    color=f"C{i % 10}",
                    marker=marker,
                    s=28,
                    label=f"{method} ({match})",
                )
    ax.set_xlabel("training time (s, this machine; cached rows: + the cache's one-off cost)")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title("accuracy against training cost (o: equal iterations, s: equal compute)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    return write_figure(path, fig, dpi=110)
