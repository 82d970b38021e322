"""segkd report on real (seconds-long) engine runs: table, CSV, plots and the qualitative grid."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from segkd.report import make_report

sys.path.insert(0, str(Path(__file__).parent))
from _engine_helpers import tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from segkd.engine import train

    root = tmp_path_factory.mktemp("runs")
    base = train(tiny_config(root / "base", iters=2))
    kd = train(tiny_config(root / "kd", iters=2, distill__teacher="{name: test_tiny_teacher}",
                           distill__allow_untrained_teacher="true",
                           distill__losses="[{name: kd}]"))
    return base, kd


def test_report_table_gain_and_figures(runs, tmp_path):
    base, kd = runs
    path = make_report([base, kd], tmp_path / "rep", num_images=2)
    text = path.read_text()
    assert "| base | test_tiny_student | baseline |" in text and "| kd | test_tiny_student | kd |" in text
    for figure in ("tradeoff.png", "class_gain.png", "qualitative.png"):
        assert (tmp_path / "rep" / figure).stat().st_size > 1000 and f"]({figure})" in text
    with (tmp_path / "rep" / "runs.csv").open() as handle:
        rows = {r["run"]: r for r in csv.DictReader(handle)}
    miou = {d.name: json.loads((d / "summary.json").read_text())["miou"] for d in (base, kd)}
    assert float(rows["kd"]["gain"]) == pytest.approx(miou["kd"] - miou["base"])
    assert float(rows["base"]["gain"]) == 0.0 and float(rows["kd"]["mIoU"]) == pytest.approx(miou["kd"])


def test_report_without_baseline_and_missing_run(runs, tmp_path):
    _, kd = runs
    text = make_report([kd], tmp_path / "solo", qualitative=False).read_text()
    assert "| kd | test_tiny_student | kd |" in text and "n/a" in text
    assert not (tmp_path / "solo" / "class_gain.png").exists()
    with pytest.raises(ValueError, match="none of the 1 paths is a finished run .*nothing: no summary.json"):
        make_report([tmp_path / "nothing"], tmp_path / "x")


def test_report_skips_what_is_not_a_run(runs, tmp_path, capsys):
    base, kd = runs
    stray = tmp_path / "notes.txt"
    stray.write_text("not a run")
    earlier_report = tmp_path / "report"
    earlier_report.mkdir()
    report = make_report([base, stray, earlier_report, kd], tmp_path / "rep2", qualitative=False)
    text = report.read_text()
    assert "| base |" in text and "| kd |" in text
    for path in (stray, earlier_report):
        assert f"skipped {path}: no summary.json" in text
    assert f"skipping {stray}" in capsys.readouterr().out


def test_report_cli(runs, tmp_path, capsys):
    from segkd.cli import main

    assert main(["report", *map(str, runs), "--out", str(tmp_path / "cli"), "--no-qualitative"]) == 0
    assert "| kd |" in capsys.readouterr().out
