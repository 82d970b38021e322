"""Time matching by measured step ratio (:mod:`segkd.engine.step_cost`, ``segkd compare --time-by``):
iterations by hand, the measurement leaves nothing behind, and the plan's per-method iteration counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _engine_helpers import tiny_config
from segkd.compare.plan import BASELINE, ComparePlan, MethodSpec, resolve
from segkd.config import ConfigError, to_dict
from segkd.engine.step_cost import StepCost, measure_step_cost


def test_iterations_by_hand():
    cost = StepCost(student_step_s=0.02, step_s=0.05)  # ratio 2.5
    assert cost.ratio == pytest.approx(2.5)
    assert cost.iterations(100) == 40  # 100 student steps / 2.5
    assert cost.iterations(101) == 40  # round(40.4)
    assert cost.iterations(100, precharge_s=0.5) == 30  # 0.5 s = 25 student steps charged beforehand
    assert cost.iterations(100, precharge_s=10.0) == 1  # budget spent beforehand: still one step
    assert StepCost(0.04, 0.03).iterations(90) == 120  # a step cheaper than the plain one (ratio 0.75)


def test_measure_step_cost_writes_nothing_and_leaves_the_rng_alone(tmp_path: Path):
    cfg = tiny_config(
        tmp_path / "run",
        iters=1000,
        distill__teacher__name="test_tiny_teacher",
        distill__allow_untrained_teacher="true",
        distill__losses="[{name: kd, weight: 1.0}]",
    )
    baseline = tiny_config(tmp_path / "baseline", iters=1000)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    cost = measure_step_cost(cfg, baseline, rounds=2, per_round=1, warmup=1)
    assert cost.student_step_s > 0 and cost.step_s > 0 and cost.ratio > 0
    assert torch.equal(torch.get_rng_state(), state)
    assert not (tmp_path / "run").exists() and not (tmp_path / "baseline").exists()


def _spec(key: str, tmp_path: Path, **extra: object) -> MethodSpec:
    return MethodSpec(key, resolve(to_dict(tiny_config(tmp_path / key, iters=7, **extra))))


def _plan(tmp_path: Path, time_by: str = "ratio") -> ComparePlan:
    kd = {"distill__teacher__name": "test_tiny_teacher", "distill__losses": "[{name: kd}]"}
    staged = {
        **kd,
        "stages": "[{name: a, train: {iters: 3}}, {name: b}]",
    }
    methods = [_spec(BASELINE, tmp_path), _spec("kd", tmp_path, **kd), _spec("staged", tmp_path, **staged)]
    return ComparePlan(tmp_path / "out", methods, [0, 1], ["time"], 100.0, time_by=time_by)


def test_ratio_matching_trains_budget_over_ratio_iterations(tmp_path: Path):
    plan = _plan(tmp_path)
    baseline, kd, staged = plan.methods
    assert not plan.by_ratio(baseline) and plan.by_ratio(kd) and not plan.by_ratio(staged)
    with pytest.raises(RuntimeError, match="step cost of 'kd' was not measured"):
        plan.run_config(kd, 0, "time", None)
    plan.step_costs["kd"] = StepCost(student_step_s=0.01, step_s=0.016)  # ratio 1.6
    for seed in plan.seeds:
        cfg = plan.run_config(kd, seed, "time", None)
        assert (cfg.train.iters, cfg.train.budget) == (62, 0.0)  # round(100 / 1.6): every seed the same
        assert cfg.train.seed == seed
    base = plan.run_config(baseline, 0, "time", None)
    assert (base.train.iters, base.train.budget) == (100, 0.0)  # the budget's unit: ratio 1
    clocked = plan.run_config(staged, 0, "time", None)  # stages share one clock
    assert (clocked.train.budget, clocked.train.budget_unit) == (100.0, "student_steps")
    assert plan.run_config(kd, 0, "iters", None).train.iters == 100


def test_clock_matching_charges_each_method_its_own_clock_against_the_baseline_run(tmp_path: Path):
    plan = _plan(tmp_path, time_by="clock")
    baseline, *methods = plan.methods
    base = plan.run_config(baseline, 0, "time", None)
    assert (base.train.iters, base.train.budget) == (100, 0.0)  # the unit: budget baseline iterations
    for method in methods:
        cfg = plan.run_config(method, 0, "time", None, student_step_s=0.02)
        assert (cfg.train.budget, cfg.train.budget_unit) == (100.0, "student_steps")
        assert cfg.train.budget_student_step_s == 0.02  # the baseline run's seconds per iteration
        assert plan.run_config(method, 0, "time", None).train.budget_student_step_s == 0.0  # measured
    with pytest.raises(ConfigError, match="--time-by"):
        _plan(tmp_path, time_by="wall")


def test_saved_step_costs_are_read_back_and_a_damaged_record_is_named(tmp_path: Path):
    from segkd.compare.runner import read_step_costs

    record = tmp_path / "step_costs.json"
    assert read_step_costs(record) == {}
    record.write_text('{"kd": {"student_step_s": 0.02, "step_s": 0.05, "ratio": 2.5}}')
    assert read_step_costs(record) == {"kd": StepCost(0.02, 0.05)}
    for damaged in ('{"kd": {"step_s": 0.05}}', "[1, 2]", "{not json"):
        record.write_text(damaged)
        with pytest.raises(ConfigError, match="step_costs.json is not a step-cost record"):
            read_step_costs(record)
