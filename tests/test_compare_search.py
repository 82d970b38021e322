"""``segkd compare --search-weights``: a method's loss weights searched at equal compute, the candidates'
rows, one step-cost measurement for all of them, and the search's summary and cost (by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segkd.cli import main as cli_main
from segkd.compare.plan import BASELINE, MethodSpec, search_candidates
from segkd.compare.report import search_lines, search_summary
from segkd.config import ConfigError


def test_candidates_scale_every_distillation_weight():
    config = {
        "distill": {"losses": [{"name": "kd", "weight": 2.0}, {"name": "cwd", "weight": 50.0}]},
        "stages": [{"distill": {"losses": [{"name": "ka", "weight": 1.0}]}}, {"train": {"iters": 3}}],
    }
    rows = search_candidates(MethodSpec("mix@cache", config, cached=True), [0.5, 4.0])
    assert [r.key for r in rows] == ["mix@cache_x0.5", "mix@cache_x4"]
    assert [t["weight"] for t in rows[0].config["distill"]["losses"]] == [1.0, 25.0]
    assert [t["weight"] for t in rows[1].config["distill"]["losses"]] == [8.0, 200.0]
    assert rows[1].config["stages"][0]["distill"]["losses"][0]["weight"] == 4.0
    assert config["distill"]["losses"][0]["weight"] == 2.0  # the method itself is untouched
    assert all(r.cached and r.searched == "mix@cache" and r.cost_key == "mix@cache" for r in rows)
    assert rows[0].base_key == "mix"  # its teacher cache is the method's
    for bad in ([], [1.0, 1.0], [-1.0]):
        with pytest.raises(ConfigError, match="--search-weights"):
            search_candidates(MethodSpec("kd", config), bad)


def test_search_summary_by_hand():
    row = {"n": 2}
    table = {
        "time": {
            BASELINE: {**row, "mean": 40.0, "compute_s": 10.0},
            "kd_x1": {**row, "mean": 42.0, "compute_s": 10.0},
            "kd_x4": {**row, "mean": 45.5, "compute_s": 11.0},
        }
    }
    summary = search_summary(table, {"kd": {"kd_x1": 1.0, "kd_x4": 4.0}})["time"]["kd"]
    assert summary["best"] == "kd_x4" and summary["best_factor"] == 4.0
    assert summary["cost_s"] == 42.0  # (10 + 11) s x 2 seeds
    assert summary["cost_x_baseline"] == 2.1  # against the baseline's 2 x 10 s
    line = search_lines({"time": {"kd": summary}})[0]
    assert "x1: 42.00, x4: 45.50" in line and "best x4 (kd_x4)" in line and "= 2.1x the baseline" in line
    assert "optimistic" in line


def test_compare_searches_the_weight_with_one_step_cost_measurement(tmp_path: Path, monkeypatch):
    from segkd.compare import runner

    calls = []
    original = runner.measure_step_cost

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs, rounds=2, per_round=1, warmup=1)

    monkeypatch.setattr(runner, "measure_step_cost", counted)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "baseline.yaml").write_text(
        "model: {name: test_tiny_student}\n"
        "data: {name: synthetic, crop_size: [32, 32], batch_size: 2, workers: 0,\n"
        "       options: {num_samples: 6, image_size: 32}}\n"
        "train: {iters: 2, log_interval: 1, device: cpu, deterministic: true}\neval: {num_visualize: 0}\n"
    )
    (recipes / "kd.yaml").write_text("distill:\n  losses: [{name: kd, weight: 1.0}]\n")
    (recipes / "teacher.yaml").write_text("base: baseline.yaml\nmodel: {name: test_tiny_teacher}\n")
    out = tmp_path / "out"
    args = ["compare", str(recipes), "--methods", "kd", "--seeds", "1", "--match", "time", "--output",
            str(out), "--teacher-config", str(recipes / "teacher.yaml"), "--search-weights", "0,2"]
    assert cli_main(args) == 0
    assert len(calls) == 1  # the weight does not change an iteration's cost: measured once
    data = json.loads((out / "compare.json").read_text())
    assert set(data["results"]["time"]) == {"baseline", "kd_x0", "kd_x2"}
    assert data["search"] == {"kd": {"kd_x0": 0.0, "kd_x2": 2.0}}
    assert data["search_results"]["time"]["kd"]["best"] in {"kd_x0", "kd_x2"}
    saved = (out / "time" / "kd_x2" / "seed0" / "config.yaml").read_text()
    assert "weight: 2.0" in saved
    assert "weight search of kd" in (out / "compare.md").read_text()
    assert cli_main([*args[:-1], "0,x"]) == 2  # a factor that is not a number: one line
