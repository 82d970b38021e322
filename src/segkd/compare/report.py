"""The comparison's outputs: ``compare.json`` (every run and every statistic), ``compare.md`` (one table
per matching) and plots (mIoU per method with every seed, gain with its 95 % interval, mIoU against
training cost for each matching).

Per matching and method: val mIoU mean ± std over seeds, the gain over the baseline paired by seed with
its 95 % confidence interval (:mod:`segkd.compare.stats`), mean training seconds and iterations, the
step ratio (the method's seconds per iteration over the baseline's, same seed and matching) and the
row's actual compute against the baseline's: its mean training seconds (plus the charged share of a
teacher cache) over the baseline's, minus 1. A time-matched row whose compute is more than
:data:`COMPUTE_TOLERANCE` off is flagged in the table and explained in a note: its comparison was not at
equal compute.
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

COMPUTE_TOLERANCE = 0.05  # a time-matched row may spend the baseline's training seconds ± 5 %


def analyse(results: list[RunResult]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{match: {method: row}}``; a row holds ``miou`` (per seed), ``mean``, ``std``, ``gain`` (paired
    statistics, None for the baseline), ``train_time_s``, ``iters``, ``step_ratio``, ``compute_s``
    (means), ``compute_vs_baseline`` (``compute_s`` over the baseline's, minus 1; None without a
    baseline) and ``compute_flag`` (time-matched and more than :data:`COMPUTE_TOLERANCE` off)."""
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
        _check_compute(match, runs, rows)
        table[match] = rows
    return table


def _check_compute(match: str, runs: list[RunResult], rows: dict[str, dict[str, Any]]) -> None:
    """Fill each row's ``compute_s``, ``compute_vs_baseline`` and ``compute_flag`` (see :func:`analyse`)."""
    for method, row in rows.items():
        row["compute_s"] = summarize([r.compute_s for r in runs if r.method == method]).mean
    base = rows.get(BASELINE, {}).get("compute_s")
    for row in rows.values():
        off = row["compute_s"] / base - 1.0 if base else None
        row["compute_vs_baseline"] = off
        row["compute_flag"] = match == "time" and off is not None and abs(off) > COMPUTE_TOLERANCE


def compute_notes(table: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One line per flagged row: how far its compute is from the baseline's and why (step ratios)."""
    notes = []
    for rows in table.values():
        for method, row in rows.items():
            if not row.get("compute_flag"):
                continue
            planned, actual = row.get("planned_ratio"), row.get("step_ratio")
            why = (
                f"its runs paid a step ratio of {actual:.2f} where {planned:.2f} was measured before "
                "training"
                if planned is not None and actual is not None
                else "its runs' clock did not stop at the baseline's training time"
            )
            notes.append(
                f"NOT equal compute: {method} trained {row['compute_s']:.1f} s against the baseline's "
                f"{rows[BASELINE]['compute_s']:.1f} s ({100 * row['compute_vs_baseline']:+.1f} %, tolerance "
                f"±{100 * COMPUTE_TOLERANCE:.0f} %): {why}. Its gain is not at equal compute; re-run the "
                "comparison on an idle machine or with --time-by clock (each run then stops at the "
                "baseline's seconds)."
            )
    return notes


def search_summary(
    table: dict[str, dict[str, dict[str, Any]]], searches: dict[str, dict[str, float]]
) -> dict[str, dict[str, Any]]:
    """Per matching and searched method: its candidates' factors and mean mIoU, the best candidate (the
    highest mean over the seeds) and what the search cost: the summed training seconds of every
    candidate's runs, also in units of the baseline's runs (``cost_x_baseline``; a method compared without
    a search costs about 1)."""
    out: dict[str, dict[str, Any]] = {}
    for match, rows in table.items():
        base = rows.get(BASELINE)
        for method, candidates in searches.items():
            present = {key: f for key, f in candidates.items() if key in rows}
            if not present:
                continue
            best = max(present, key=lambda key: rows[key]["mean"])
            spent = sum(rows[key]["compute_s"] * rows[key]["n"] for key in present)
            out.setdefault(match, {})[method] = {
                "factors": present,
                "means": {key: rows[key]["mean"] for key in present},
                "best": best,
                "best_factor": present[best],
                "cost_s": spent,
                "cost_x_baseline": spent / (base["compute_s"] * base["n"]) if base else None,
            }
    return out


def search_lines(summary: dict[str, dict[str, Any]]) -> list[str]:
    """The weight search in words: each candidate, the best, the cost, and the caveat of choosing it."""
    lines = []
    for match, methods in summary.items():
        for method, s in methods.items():
            tried = ", ".join(f"x{f:g}: {s['means'][k]:.2f}" for k, f in s["factors"].items())
            times = s["cost_x_baseline"]
            cost = "" if times is None else f" = {times:.1f}x the baseline's runs"
            lines.append(
                f"{match}-matched weight search of {method} (every distillation weight times a factor; mean "
                f"val mIoU {tried}): best x{s['best_factor']:g} ({s['best']}). The search cost "
                f"{s['cost_s']:.1f} s of training{cost}. The best was chosen on the same validation split "
                "and seeds it is reported on, so its gain is optimistic by the choice; confirm it with "
                "new seeds (--seeds) before relying on it."
            )
    return lines


def _compute_cell(row: dict[str, Any]) -> str:
    off = row.get("compute_vs_baseline")
    if off is None:
        return ""
    return f"{100 * off:+.1f} %" + (" (!)" if row.get("compute_flag") else "")


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
        "| method | seeds | val mIoU (mean ± std) | gain over baseline [95% CI] | helps? | train s "
        "| compute vs baseline | iters | step ratio |"
        + (" matched ratio |" if planned else "")
        + (" teacher cache s (once) |" if cached else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if planned else "") + ("---|" if cached else ""),
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
            f"| {row['train_time_s']:.1f} | {_compute_cell(row)} | {row['iters']:.0f} | {ratio} |"
            f"{matched}{cache}"
        )
    return "\n".join(lines)


def print_tables(table: dict[str, dict[str, dict[str, Any]]]) -> None:
    for match, rows in table.items():
        print(f"\n{match}-matched:\n{markdown_table(rows)}")
    for note in compute_notes(table):
        print(f"segkd compare: warning: {note}")


def write_outputs(
    results: list[RunResult], out: Path, header: dict[str, Any], notes: list[str] | None = None
) -> dict[str, Any]:
    """Write ``compare.json``, ``compare.md`` and the plots into ``out``; returns the JSON data."""
    out.mkdir(parents=True, exist_ok=True)
    table = analyse(results)
    search = search_summary(table, header.get("search") or {})
    notes = compute_notes(table) + search_lines(search) + (notes or [])
    data = {
        **header,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "results": table,
        "search_results": search,
        "notes": notes,
        "runs": results_as_dicts(results),
    }
    write_text(out / "compare.json", json.dumps(data, indent=2))
    figures = plot_all(results, table, out)
    write_text(out / "compare.md", _markdown(data, table, figures, notes))
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
        "time-matched run trains budget / matched ratio iterations (*clock*: the run charged its own clock "
        "against the baseline run's seconds per iteration). Compute vs baseline: the row's mean training "
        f"seconds (plus a teacher cache's charged share) over the baseline's; (!) marks a time-matched row "
        f"more than {100 * COMPUTE_TOLERANCE:.0f} % off, i.e. not at equal compute."
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
