"""Demo table arithmetic and method skipping (the full demo itself is run by hand: `segkd demo --quick`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segkd.demo.pipeline import METHODS, DemoMethod, missing_losses
from segkd.demo.report import comparison_rows, format_table, teacher_gap


def _run(tmp: Path, name: str, model: str, method: str, miou: float, time_s: float) -> Path:
    run = tmp / name
    run.mkdir()
    summary = {"name": name, "model": model, "method": method, "params": 10, "macs": 2e6, "latency_ms": 1.0,
               "miou": miou, "train_time_s": time_s, "iters": 5}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_comparison_rows_gain_overhead_and_gap(tmp_path: Path):
    runs = [_run(tmp_path, "teacher", "big", "teacher", 60.0, 100.0),
            _run(tmp_path, "baseline", "small", "baseline", 40.0, 10.0),
            _run(tmp_path, "kd", "small", "kd", 43.5, 15.0)]
    rows = comparison_rows(runs)
    assert rows[0]["gain"] is None and rows[1]["gain"] == 0.0
    assert rows[2]["gain"] == pytest.approx(3.5) and rows[2]["overhead"] == pytest.approx(0.5)
    assert teacher_gap(rows) == pytest.approx(20.0)
    table = format_table(rows)
    assert "+3.50" in table and "+50%" in table and "MMACs" in table


def test_unregistered_method_is_reported_missing():
    fake = DemoMethod("nope", ({"name": "kd", "weight": 1.0}, {"name": "no_such_loss", "weight": 1.0}))
    assert missing_losses(fake) == ["no_such_loss"]
    assert {m.key for m in METHODS} == {"kd", "skd", "ka", "cirkd", "dist"}


def test_demo_never_writes_over_an_earlier_demo(tmp_path: Path):
    from segkd.demo.pipeline import unused_output_dir

    out = tmp_path / "demo"
    assert unused_output_dir(out) == out  # missing: used as is
    out.mkdir()
    assert unused_output_dir(out) == out  # empty: used as is
    (out / "teacher").mkdir()
    assert unused_output_dir(out) == tmp_path / "demo-2"
    (tmp_path / "demo-2").mkdir()
    (tmp_path / "demo-2" / "report.md").write_text("x")
    assert unused_output_dir(out) == tmp_path / "demo-3"
