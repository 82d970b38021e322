"""``segkd compare``: statistics against values computed by hand, the table, outputs, resume and refusal.

End-to-end runs use the tiny test networks on 32x32 synthetic scenes (a few iterations each).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from segkd.cli import main as cli_main
from segkd.compare.report import analyse, markdown_table
from segkd.compare.runner import RunResult
from segkd.compare.stats import paired_gain, summarize, t_quantile
from segkd.config import ConfigError

# ------------------------------------------------------------------------------------------ statistics


def test_summary_mean_and_sample_std_by_hand():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    # mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; 5 / 3 = 1.6667; sqrt = 1.290994
    assert s.mean == 2.5 and s.std == pytest.approx(1.290994, abs=1e-6) and s.n == 4
    assert summarize([7.0]).std is None


def test_t_quantiles_match_the_tables():
    assert t_quantile(0.95, 2) == pytest.approx(4.302653, abs=1e-6)
    assert t_quantile(0.95, 4) == pytest.approx(2.776445, abs=1e-6)
    assert t_quantile(0.95, 1000) == pytest.approx(1.962339, abs=1e-6)


def test_paired_gain_by_hand():
    method = {0: 50.0, 1: 52.0, 2: 54.0}
    baseline = {0: 48.0, 1: 49.0, 2: 50.0, 3: 99.0}  # seed 3 has no partner and is left out
    g = paired_gain(method, baseline)
    # differences 2, 3, 4: mean 3, std 1; half width 4.302653 * 1 / sqrt(3) = 2.484138
    assert (g.mean, g.std, g.n) == (3.0, 1.0, 3)
    assert g.ci_low == pytest.approx(0.515862, abs=1e-6) and g.ci_high == pytest.approx(5.484138, abs=1e-6)
    assert g.significant
    # The unpaired spreads (std 2 and 1) would not separate the means; pairing does.
    hurt = paired_gain({0: 40.0, 1: 41.0, 2: 42.0}, {0: 45.0, 1: 47.0, 2: 48.0})  # -5, -6, -6
    # mean -5.6667, std 0.57735, half width 4.302653 * 0.57735 / sqrt(3) = 1.434218
    assert hurt.mean == pytest.approx(-5.666667, abs=1e-6) and not hurt.significant
    assert hurt.ci_high == pytest.approx(-4.232449, abs=1e-6)
    single = paired_gain({0: 50.0}, {0: 48.0})
    assert single.mean == 2.0 and single.ci_low is None and not single.significant


def _result(method: str, seed: int, miou: float, step_s: float, match: str = "iters") -> RunResult:
    return RunResult(method, seed, match, f"/x/{method}/{seed}", miou, step_s * 10, 10, step_s, None, False)


def test_analyse_rows_and_table():
    results = [
        _result("baseline", 0, 40.0, 1.0),
        _result("baseline", 1, 44.0, 1.0),
        _result("kd", 0, 43.0, 2.0),
        _result("kd", 1, 46.0, 3.0),
    ]
    rows = analyse(results)["iters"]
    assert rows["baseline"]["mean"] == 42.0 and rows["baseline"]["std"] == pytest.approx(math.sqrt(8))
    assert rows["baseline"]["gain"] is None and rows["baseline"]["step_ratio"] == 1.0
    kd = rows["kd"]
    assert kd["mean"] == 44.5 and kd["step_ratio"] == 2.5  # (2/1 + 3/1) / 2
    # gains 3 and 2: mean 2.5, std 0.7071, half width 12.706205 * 0.7071 / sqrt(2) = 6.353102
    assert kd["gain"]["mean"] == 2.5
    assert kd["gain"]["ci_low"] == pytest.approx(2.5 - 6.353102, abs=1e-5)
    table = markdown_table(rows)
    assert "| kd | 2 | 44.50 ± 2.12 | +2.50 [-3.85, +8.85] | not shown |" in table


# ------------------------------------------------------------------------------------------ end to end
BASELINE_YAML = """\
name: tiny_baseline
model: {name: test_tiny_student}
data: {name: synthetic, crop_size: [32, 32], batch_size: 2, workers: 0,
       options: {num_samples: 6, image_size: 32}}
train: {iters: 2, log_interval: 1, device: cpu, deterministic: true}
eval: {num_visualize: 0}
"""


def _recipes(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "baseline.yaml").write_text(BASELINE_YAML)
    (folder / "kd.yaml").write_text("distill:\n  losses: [{name: kd, weight: 1.0}]\n")  # a loss bundle
    (folder / "teacher.yaml").write_text(
        "base: baseline.yaml\nname: tiny_teacher\nmodel: {name: test_tiny_teacher}\n"
    )
    return folder


def _compare(recipes: Path, out: Path, *extra: str) -> int:
    return cli_main(
        [
            "compare",
            str(recipes),
            "--methods",
            "kd",
            "--seeds",
            "2",
            "--budget",
            "2",
            "--output",
            str(out),
            "--teacher-config",
            str(recipes / "teacher.yaml"),
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    recipes = _recipes(tmp_path_factory.mktemp("recipes"))
    out = tmp_path_factory.mktemp("cmp") / "out"
    assert _compare(recipes, out, "--match", "both") == 0
    return recipes, out


def test_compare_writes_statistics_that_match_the_runs(finished: tuple[Path, Path]):
    _, out = finished
    data = json.loads((out / "compare.json").read_text())
    assert len(data["runs"]) == 8  # 2 matchings x 2 seeds x (baseline + kd)
    for match in ("iters", "time"):
        runs = {(r["method"], r["seed"]): r for r in data["runs"] if r["match"] == match}
        for key, run in runs.items():
            summary = json.loads((Path(run["run_dir"]) / "summary.json").read_text())
            assert summary["miou"] == run["miou"], key
        if match == "iters":
            assert all(r["iters"] == 2 for r in runs.values())
        else:  # --time-by ratio (default): kd's step ratio measured once, both seeds train budget / ratio
            costs = json.loads((out / "time" / "step_costs.json").read_text())
            assert set(costs) == {"kd"} and costs["kd"]["ratio"] > 0
            assert runs[("baseline", 0)]["iters"] == runs[("baseline", 1)]["iters"] == 2
            expected = max(1, round(2 / costs["kd"]["ratio"]))
            assert runs[("kd", 0)]["iters"] == runs[("kd", 1)]["iters"] == expected
            assert data["results"]["time"]["kd"]["planned_ratio"] == pytest.approx(costs["kd"]["ratio"])
        kd = data["results"][match]["kd"]
        diffs = [runs[("kd", s)]["miou"] - runs[("baseline", s)]["miou"] for s in (0, 1)]
        assert kd["gain"]["mean"] == pytest.approx(sum(diffs) / 2)
        assert kd["mean"] == pytest.approx((runs[("kd", 0)]["miou"] + runs[("kd", 1)]["miou"]) / 2)
    teacher = json.loads((out / "teacher" / "summary.json").read_text())
    assert teacher["model"] == "test_tiny_teacher"
    kd_config = (out / "iters" / "kd" / "seed0" / "config.yaml").read_text()
    assert str(out / "teacher" / "checkpoints") in kd_config  # every method distils from that teacher
    for name in ("compare.md", "miou_iters.png", "gain_time.png", "cost.png"):
        assert (out / name).is_file(), name
    assert "| kd | 2 |" in (out / "compare.md").read_text()


def test_compare_again_reuses_every_run(finished: tuple[Path, Path]):
    recipes, out = finished
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/*/seed*/summary.json")}
    assert _compare(recipes, out, "--match", "both") == 0
    data = json.loads((out / "compare.json").read_text())
    assert all(r["reused"] for r in data["runs"])
    assert before == {p: p.stat().st_mtime_ns for p in out.glob("*/*/seed*/summary.json")}


def test_compare_refuses_a_finished_run_with_other_settings(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture
):
    recipes, out = finished
    assert _compare(recipes, out, "--match", "iters", "optim.lr=0.5") == 2
    assert "optim.lr: 0.01 -> 0.5" in capsys.readouterr().err


def test_killed_compare_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    recipes = _recipes(tmp_path / "recipes")
    out = tmp_path / "out"
    from segkd.engine.trainer import Trainer

    original = Trainer.train_step
    calls = {"n": 0}

    def killed_in_third_run(self: Trainer) -> dict:
        calls["n"] += 1
        if calls["n"] == 6:  # teacher 2 steps, baseline seed 0 2 steps, kd seed 0: killed after 1 step
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", killed_in_third_run)
    assert _compare(recipes, out, "--match", "iters", "train.ckpt_interval=1") == 130  # one line
    assert "segkd compare: interrupted; the " in capsys.readouterr().err
    assert not (out / "iters" / "kd" / "seed0" / "summary.json").exists()
    monkeypatch.setattr(Trainer, "train_step", original)
    capsys.readouterr()
    assert _compare(recipes, out, "--match", "iters", "train.ckpt_interval=1") == 0
    printed = capsys.readouterr().out
    assert "resumed from" in printed and "iteration 1" in printed  # kd seed 0 continued its checkpoint
    data = json.loads((out / "compare.json").read_text())
    reused = {(r["method"], r["seed"]): r["reused"] for r in data["runs"]}
    assert reused == {("baseline", 0): True, ("kd", 0): False, ("baseline", 1): False, ("kd", 1): False}


def test_missing_teacher_is_refused_before_training(tmp_path: Path, capsys: pytest.CaptureFixture):
    recipes = _recipes(tmp_path / "recipes")
    (recipes / "kd.yaml").write_text(
        "base: baseline.yaml\ndistill:\n  teacher: {name: test_tiny_teacher, checkpoint: nowhere.pt}\n"
        "  losses: [{name: kd}]\n"
    )
    args = ["compare", str(recipes), "--methods", "kd", "--seeds", "1", "--output", str(tmp_path / "o")]
    assert cli_main(args) == 2
    assert "distill.teacher.checkpoint 'nowhere.pt' is not a file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="--teacher-config"):
        cli_main([*args[:2], "--methods", str(recipes / "bundle.yaml"), "--debug"]) if (
            recipes / "bundle.yaml"
        ).write_text("distill:\n  losses: [{name: kd}]\n") else None


@pytest.mark.parametrize("time_by", ["ratio", "clock"])
def test_cached_rows_write_the_cache_once_and_charge_its_cost(tmp_path: Path, time_by: str):
    recipes = _recipes(tmp_path / "recipes")
    out = tmp_path / "out"
    args = [
        "compare",
        str(recipes),
        "--methods",
        "kd,kd@cache",
        "--seeds",
        "2",
        "--budget",
        "2",
        "--match",
        "time",
        "--output",
        str(out),
        "--teacher-config",
        str(recipes / "teacher.yaml"),
        "--time-by",
        time_by,
    ]
    assert cli_main(args) == 0
    cost = json.loads((out / "cache" / "kd" / "compare_cost.json").read_text())["write_seconds"]
    data = json.loads((out / "compare.json").read_text())
    cached = [r for r in data["runs"] if r["method"] == "kd@cache"]
    assert len(cached) == 2 and all(r["cache_s"] == cost > 0 for r in cached)
    assert all(r["cache_s"] == 0 for r in data["runs"] if r["method"] != "kd@cache")
    import yaml

    saved = yaml.safe_load((out / "time" / "kd@cache" / "seed1" / "config.yaml").read_text())
    assert saved["distill"]["teacher"]["cache"] == str(out / "cache" / "kd")
    if time_by == "clock":
        assert saved["train"]["budget_precharge_s"] == cost  # --cache-cost charge (the default)
    else:  # the cost, in student steps, comes off the budget before it is divided by the step ratio
        step = json.loads((out / "time" / "step_costs.json").read_text())["kd@cache"]
        left = 2 - cost / step["student_step_s"]
        assert saved["train"]["iters"] == max(1, round(left / step["ratio"]))
    assert "teacher cache s (once)" in (out / "compare.md").read_text()


def test_term_gradient_norms_measure_each_weighted_term(tmp_path: Path):
    from _engine_helpers import tiny_config
    from segkd.compare.diagnose import term_gradient_norms
    from segkd.engine import train

    cfg = tiny_config(
        tmp_path / "run",
        iters=1,
        distill__teacher__name="test_tiny_teacher",
        distill__allow_untrained_teacher="true",
        distill__losses="[{name: kd, weight: 1.0}, {name: dist, weight: 0.0}]",
    )
    norms = term_gradient_norms(train(cfg))
    assert set(norms) == {"ce", "aux_ce", "kd", "dist"}
    assert norms["ce"] > 0 and norms["kd"] > 0
    assert norms["dist"] == 0.0  # weight 0: no pull on the student
