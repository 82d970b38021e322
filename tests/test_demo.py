"""The demo's plan (built on the public compare API) and its output folder; the full demo is run by hand
(`segkd demo`, `segkd demo --quick`) and its table is in the README."""

from __future__ import annotations

from pathlib import Path

from segkd.compare import BASELINE
from segkd.demo.pipeline import METHODS, SETTINGS, demo_plan, unused_output_dir
from segkd.demo.report import demo_header
from segkd.losses import LOSSES


def test_demo_plan_is_a_fair_comparison(tmp_path: Path):
    setting = SETTINGS["default"]
    plan = demo_plan(setting, tmp_path / "demo")
    assert [m.key for m in plan.methods] == [BASELINE, "kd", "cwd", "dist", "cirkd", "unlabeled", "offline"]
    # The offline pseudo-label baseline: the cache written with the bundle's hard-label term, then plain
    # training on its labels (tests/test_pseudo_labels_offline.py), the union drawn uniformly.
    unlabeled, offline = plan.methods[-2:]
    assert offline.cached and offline.offline and not unlabeled.cached
    assert offline.config["distill"]["losses"] == unlabeled.config["distill"]["losses"][:1]
    assert offline.config["distill"]["losses"][0]["name"] == "pseudo_label"
    assert unlabeled.config["data"]["unlabeled"]["ratio"] == 0.5
    assert offline.config["data"]["unlabeled"]["ratio"] == 0.875
    assert plan.matches == ["time"] and len(plan.seeds) >= 3 and plan.budget == setting.budget
    assert plan.time_by == "clock"  # every method's run stops at its seed's baseline seconds
    cached = demo_plan(setting, tmp_path / "cached", ["kd", "kd@cache"])
    assert cached.methods[-1].cached and cached.cache_cost == "amortize"
    base = plan.methods[0].config
    assert base["data"]["unlabeled"] is None or not base["data"]["unlabeled"].get("split")
    assert base["data"]["options"]["num_samples"]["train"] == setting.labeled
    assert plan.run_config(plan.methods[0], seed=1, match="time", teacher_ckpt=None).train.iters == 1000
    for method in plan.methods[1:]:
        cfg = plan.run_config(method, seed=1, match="time", teacher_ckpt="t.pt", student_step_s=0.02)
        assert (cfg.train.budget, cfg.train.budget_unit) == (setting.budget, "student_steps")
        assert cfg.train.budget_student_step_s == 0.02
        assert cfg.train.seed == 1 and cfg.distill.teacher.checkpoint == "t.pt"
        assert cfg.distill.teacher.name == "demo_teacher"
        assert cfg.model.options == {"kernel_sizes": [3, 3, 3, 3]}
        assert cfg.data.unlabeled.split == "unlabeled"
        assert cfg.data.unlabeled.ratio == (0.875 if method.key == "offline" else setting.unlabeled_ratio)
    teacher = plan.teacher_config()
    assert teacher.data.options["num_samples"]["train"] == setting.teacher_images and teacher.train.seed == 0
    assert all(t["name"] in LOSSES for terms in METHODS.values() for t in terms)


def test_demo_header_names_the_command_that_ran():
    setting = SETTINGS["default"]
    assert demo_header(setting, False)["command"] == "segkd demo"
    assert demo_header(setting, True, ["kd", "kd@cache"], ["iters", "time"])["command"] == (
        "segkd demo --quick --methods kd kd@cache --match both"
    )
    assert demo_plan(setting, Path("x"), ["cirkd"], ["iters"]).matches == ["iters"]
    assert demo_header(setting, False, time_by="ratio")["command"] == "segkd demo --time-by ratio"
    assert demo_plan(setting, Path("x"), ["kd"], time_by="ratio").time_by == "ratio"


def test_demo_never_writes_over_an_earlier_demo(tmp_path: Path):
    out = tmp_path / "demo"
    assert unused_output_dir(out) == out  # missing: used as is
    out.mkdir()
    assert unused_output_dir(out) == out  # empty: used as is
    (out / "teacher").mkdir()
    assert unused_output_dir(out) == tmp_path / "demo-2"
    (tmp_path / "demo-2").mkdir()
    (tmp_path / "demo-2" / "report.md").write_text("x")
    assert unused_output_dir(out) == tmp_path / "demo-3"


def test_cost_reason_names_the_ratio_steps_and_spread():
    from segkd.demo.report import _cost_reason

    row = {"planned_ratio": 2.14, "iters": 468.0, "miou": {"0": 12.07, "1": 10.64, "2": 12.2}, "std": 0.87}
    baseline = {"iters": 1000.0, "std": 0.2}
    assert _cost_reason(row, baseline) == (
        " Its step costs 2.14x a baseline iteration, so at equal compute it trains 468 steps against the "
        "baseline's 1000; its seeds give 10.64-12.20 mIoU (std 0.87, the baseline's 0.20)."
    )
    assert _cost_reason({**row, "planned_ratio": None}, baseline) == ""  # clock-matched: nothing measured


def test_held_out_settings_use_their_own_data(tmp_path: Path):
    digits = demo_plan(SETTINGS["digits"], tmp_path / "d", ["kd"])
    data = digits.methods[1].config["data"]
    assert data["name"] == "digit_scenes" and data["options"]["object_size"] == [40, 70]
    assert data["options"]["num_samples"]["train"] == SETTINGS["digits"].labeled
    shapes = demo_plan(SETTINGS["shapes64"], tmp_path / "s", ["kd"]).teacher_config()
    assert shapes.data.options["num_shapes"] == 5 and shapes.data.crop_size == [64, 64]
    header = demo_header(SETTINGS["digits"], False, setting_name="digits")
    assert header["command"] == "segkd demo --setting digits"


def test_the_unlabelled_row_is_compared_with_the_offline_baseline_by_seed():
    from segkd.demo.report import _against_offline

    # Differences 2, 3, 4: mean 3, std 1, half-width t(0.975, 2) / sqrt(3) = 4.303 / 1.732 = 2.484.
    rows = {"unlabeled": {"miou": {"0": 10.0, "1": 12.0, "2": 14.0}},
            "offline": {"miou": {"0": 8.0, "1": 9.0, "2": 10.0}}}
    (line,) = _against_offline("time", rows)
    assert "+3.00 mIoU, 95% CI [+0.52, +5.48]: above the offline baseline" in line
    rows["offline"]["miou"]["2"] = 16.0  # differences 2, 3, -2
    assert "not separated from" in _against_offline("time", rows)[0]
    assert _against_offline("time", {"unlabeled": rows["unlabeled"]}) == []
