"""What the demo adds to the comparison's ``compare.md``: its setting, the teacher's accuracy and a plain
reading of each method's result."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from segkd.compare import BASELINE, ComparePlan, RunResult
from segkd.compare.report import analyse
from segkd.rundir import RunDir


def demo_header(
    setting: Any,
    quick: bool,
    methods: list[str] | None = None,
    matches: list[str] | None = None,
    setting_name: str = "default",
    time_by: str = "clock",
) -> dict[str, Any]:
    """Entries of ``compare.json`` describing the demo's setting and the command that ran it."""
    command = "segkd demo" + (" --quick" if quick else "")
    command += f" --setting {setting_name}" if setting_name not in ("default", "quick") else ""
    command += f" --methods {' '.join(methods)}" if methods else ""
    if matches and matches != ["time"]:
        command += " --match " + ("both" if len(matches) > 1 else matches[0])
    command += f" --time-by {time_by}" if time_by != "clock" else ""
    return {
        "title": "segkd demo"
        + (" --quick (smoke run: accuracy near chance)" if quick else "")
        + (f" --setting {setting_name}" if setting_name not in ("default", "quick") else ""),
        "command": command,
        "setting": asdict(setting),
    }


def teacher_miou(plan: ComparePlan) -> float | None:
    path = RunDir(plan.teacher_dir).summary
    return json.loads(path.read_text())["miou"] if path.is_file() else None


def demo_notes(plan: ComparePlan, results: list[RunResult]) -> list[str]:
    """One line on the setting and the teacher, then one per method: helps (interval above zero), hurts
    (below zero) or not shown."""
    s = plan.methods[0].config["data"]["options"]["num_samples"]
    expected = len(plan.matches) * len(plan.seeds) * len(plan.methods)
    teacher = teacher_miou(plan)
    lines = [
        f"Setting: the student has {s['train']} labelled images; distilled students also see "
        f"{s['unlabeled']} unlabelled ones (teacher targets only); validation on {s['val']} images. "
        f"Teacher val mIoU: {teacher:.2f}."
        if teacher is not None
        else "Teacher: not trained yet."
    ]
    for match, rows in analyse(results).items():
        for method, row in rows.items():
            gain = row["gain"]
            if gain is None or gain["ci_low"] is None:
                continue
            interval = f"{gain['mean']:+.2f} mIoU, 95% CI [{gain['ci_low']:+.2f}, {gain['ci_high']:+.2f}]"
            if gain["significant"]:
                verdict = "helps"
            elif gain["ci_high"] < 0:
                verdict = "hurts"
            else:
                verdict = "is not shown to help (the interval contains zero)"
            line = f"{match}-matched {method} {verdict}: {interval}, {row['iters']:.0f} steps on average."
            if not gain["significant"] and len(results) == expected:
                line += _cost_reason(row, rows.get(BASELINE))
                line += " " + _gradient_reason(plan.run_dir(match, method, plan.seeds[0]))
            lines.append(line)
        lines += _against_offline(match, rows)
    return lines


def _against_offline(match: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    """The unlabelled-image row against the offline baseline (predict, then train), paired by seed: does
    the online recipe reach what labelling the pool once and training on it gives (issue 28)?"""
    from segkd.compare.stats import paired_gain

    online, offline = rows.get("unlabeled"), rows.get("offline")
    if online is None or offline is None:
        return []
    diff = paired_gain(online["miou"], offline["miou"])
    if diff.ci_low is None:
        return []
    verdict = "above" if diff.ci_low > 0 else "below" if diff.ci_high < 0 else "not separated from"
    return [
        f"{match}-matched unlabeled against offline (predict, then train), same seeds: "
        f"{diff.mean:+.2f} mIoU, 95% CI [{diff.ci_low:+.2f}, {diff.ci_high:+.2f}]: "
        f"{verdict} the offline baseline."
    ]


def _cost_reason(row: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    """The step ratio a time-matched row was trained at (the measured one when matched by ratio, else its
    runs' own), and the steps it got against the baseline's."""
    ratio = row.get("planned_ratio") or row.get("step_ratio")
    if ratio is None or baseline is None:
        return ""
    seeds = list(row["miou"].values())
    return (
        f" Its step costs {ratio:.2f}x a baseline iteration, so at equal compute it trains "
        f"{row['iters']:.0f} steps against the baseline's {baseline['iters']:.0f}; its seeds give "
        f"{min(seeds):.2f}-{max(seeds):.2f} mIoU (std {row['std'] or 0:.2f}, the baseline's "
        f"{baseline['std'] or 0:.2f})."
    )


def _gradient_reason(run_dir: Any) -> str:
    """The measured size of each term's gradient on the trained student (one batch, seed 0's run)."""
    from segkd.compare.diagnose import term_gradient_norms

    norms = term_gradient_norms(run_dir)
    listed = ", ".join(f"{name} {value:.3g}" for name, value in norms.items())
    return f"Gradient norm of each weighted term on the student (seed 0, one batch): {listed}."
