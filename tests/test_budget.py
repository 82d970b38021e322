"""Budgeted training (``train.budget``): the stop, the LR schedule over the budget, resume continuing it.

Wall-clock time is replaced by a fake clock that advances exactly 1 s per training step, so every test
is exact and independent of the machine's speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _engine_helpers import tiny_config
from segkd.engine import budget as budget_module
from segkd.engine import clock as clock_module
from segkd.engine import train
from segkd.engine import trainer as trainer_module
from segkd.engine.budget import Budget
from segkd.engine.checkpoint import load_checkpoint
from segkd.engine.trainer import Trainer
from segkd.schedule import progress_factor


class FakeClock:
    """Stands for the ``time`` module inside :mod:`segkd.engine.clock` (every step timer reads it)."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Each training step takes exactly one fake second (the clock advances before the step's update,
    so the LR the step sets sees the step's time); the plain student step costs 0.25 s."""
    fake = FakeClock()
    monkeypatch.setattr(clock_module, "time", fake)
    monkeypatch.setattr(trainer_module, "measure_student_step", lambda *args, **kwargs: 0.25)
    original = Trainer.train_step

    def one_second_step(self: Trainer) -> dict:
        fake.now += 1.0
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", one_second_step)
    return fake


def _train_log(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    return [x for x in lines if "lr" in x]


def test_seconds_budget_stops_when_spent_and_schedules_over_it(tmp_path: Path, clock: FakeClock):
    run = train(tiny_config(tmp_path / "sec", iters=1000, train__budget=5, train__budget_unit="seconds"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iters"] == 5  # 5 one-second steps, train.iters (1000) is not used
    assert summary["budget"]["spent_s"] == 5.0 and summary["budget"]["unit"] == "seconds"
    # LR after step k of 5: 0.01 * (1 - k/5) ** 0.9, written out:
    # 0.8**0.9 = 0.8180521, 0.6**0.9 = 0.6314459, 0.4**0.9 = 0.4383833, 0.2**0.9 = 0.2349238, 0**0.9 = 0
    expected = [0.008180521, 0.006314459, 0.004383833, 0.002349238, 0.0]
    assert [x["lr"] for x in _train_log(run)] == pytest.approx(expected, abs=1e-8)
    assert [x["budget_spent"] for x in _train_log(run)] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_student_step_budget_divides_by_the_measured_student_step(tmp_path: Path, clock: FakeClock):
    """12 student steps of 0.25 s = 3 s of training = 3 steps of 1 s."""
    run = train(
        tiny_config(tmp_path / "steps", iters=1000, train__budget=12, train__budget_unit="student_steps")
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iters"] == 3
    assert summary["budget"]["student_step_s"] == 0.25
    assert [x["budget_spent"] for x in _train_log(run)] == [4.0, 8.0, 12.0]


def test_resume_continues_the_budget_exactly(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
):
    common = dict(iters=1000, train__budget=6, train__budget_unit="seconds", train__ckpt_interval=3)
    full = train(tiny_config(tmp_path / "full", **common))

    stepping = Trainer.train_step  # the one-second step of the fixture

    def crash_after_four(self: Trainer) -> dict:
        if self.iteration == 4:
            raise KeyboardInterrupt  # killed after iteration 4; the iteration-3 checkpoint survives
        return stepping(self)

    monkeypatch.setattr(Trainer, "train_step", crash_after_four)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "cut", **common))
    saved = load_checkpoint(tmp_path / "cut" / "checkpoints" / "latest.pt")
    assert saved["iteration"] == 3 and saved["budget"]["spent_s"] == 3.0
    monkeypatch.setattr(Trainer, "train_step", stepping)
    resumed = train(tiny_config(tmp_path / "cut", train__resume="auto", **common))

    a = load_checkpoint(full / "checkpoints" / "latest.pt")
    b = load_checkpoint(resumed / "checkpoints" / "latest.pt")
    assert a["iteration"] == b["iteration"] == 6
    assert a["budget"] == b["budget"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"] == 0.0


def test_student_step_budget_keeps_the_measured_cost_on_resume(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
):
    """The resumed run uses the saved student-step cost, not a new measurement."""
    common = dict(iters=1000, train__budget=16, train__budget_unit="student_steps", train__ckpt_interval=2)
    stepping = Trainer.train_step

    def crash_after_two(self: Trainer) -> dict:
        if self.iteration == 2:
            raise KeyboardInterrupt
        return stepping(self)

    monkeypatch.setattr(Trainer, "train_step", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "cut", **common))
    monkeypatch.setattr(Trainer, "train_step", stepping)
    monkeypatch.setattr(trainer_module, "measure_student_step", lambda *a, **k: 1.0)  # would give 16 steps
    run = train(tiny_config(tmp_path / "cut", train__resume="auto", **common))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iters"] == 4 and summary["budget"]["student_step_s"] == 0.25


def test_budget_progress_schedule_and_errors():
    b = Budget("seconds", 10.0)
    assert b.progress() == 0.0 and not b.exhausted() and b.max_iterations() is None
    b.spent_s = 4.0
    assert b.progress() == 0.4
    b.spent_s = 12.0
    assert b.progress() == 1.0 and b.exhausted()
    assert Budget("iters", 7).max_iterations() == 7
    # warm-up of 4 iterations from ratio 0.1 at 25 % of the budget: 0.75**0.9 * (0.1 + 0.9 * 2/4)
    assert progress_factor(2, 0.25, 0.9, 4, 0.1) == pytest.approx(0.7718895 * 0.55, abs=1e-7)
    with pytest.raises(ValueError, match="train.budget_unit"):
        Budget("minutes", 1.0)
    with pytest.raises(ValueError, match="train.budget"):
        Budget("seconds", 0.0)
    with pytest.raises(ValueError, match="budget is in seconds"):
        Budget("student_steps", 5.0).load_state_dict(Budget("seconds", 5.0).state_dict())


def test_measure_student_step_leaves_the_student_and_the_rng_alone():
    from segkd.models import build_model

    torch.manual_seed(3)
    model = build_model("test_tiny_student", 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    batches = iter(
        [
            {
                "image": torch.randn(2, 3, 16, 16, generator=generator),
                "label": torch.randint(0, 3, (2, 16, 16), generator=generator),
            }
            for _ in range(5)
        ]
    )
    state = torch.get_rng_state()
    seconds = budget_module.measure_student_step(
        model, batches, torch.device("cpu"), "adamw", repeats=2, warmup=3
    )
    assert seconds > 0
    assert torch.equal(torch.get_rng_state(), state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_precharged_seconds_count_against_the_budget(tmp_path: Path, clock: FakeClock):
    """2 s charged beforehand (e.g. a teacher cache's one-off cost) leave 3 of a 5 s budget."""
    cfg = tiny_config(
        tmp_path / "pre",
        iters=1000,
        train__budget=5,
        train__budget_unit="seconds",
        train__budget_precharge_s=2,
    )
    summary = json.loads((train(cfg) / "summary.json").read_text())
    assert summary["iters"] == 3 and summary["budget"]["spent_s"] == 5.0


def test_a_budget_spent_before_the_first_step_still_validates(tmp_path: Path, clock: FakeClock):
    cfg = tiny_config(
        tmp_path / "none",
        iters=1000,
        train__budget=2,
        train__budget_unit="seconds",
        train__budget_precharge_s=3,
    )
    run = train(cfg)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iters"] == 0 and summary["miou"] >= 0  # the initial weights' mIoU, never -1
    assert (run / "checkpoints" / "best.pt").is_file()
