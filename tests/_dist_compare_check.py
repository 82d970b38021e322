"""Run under ``torchrun --nproc_per_node=2`` (gloo, CPU) by test_compare_dist.py: ``segkd compare --match
time`` with ``--time-by ratio`` and ``--time-by clock``; every rank writes what it trained.

The clock is a fake one (a baseline iteration takes 1 s, a distilled one 2 s, on every rank), so the
measured step ratio, every run's iterations and every run's seconds are exact and the job is
deterministic: the test checks that both ranks measure the same ratio, train the same runs for the same
iterations, and that the comparison's table (rank 0) shows equal compute.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from segkd.cli import main as cli_main
from segkd.compare import plan_from_files, run_compare
from segkd.engine import clock as clock_module
from segkd.engine.trainer import Trainer

BASELINE_YAML = """\
name: tiny_baseline
model: {name: test_tiny_student}
data: {name: synthetic, crop_size: [32, 32], batch_size: 2, workers: 0,
       options: {num_samples: 8, image_size: 32}}
train: {iters: 4, log_interval: 1, device: cpu, deterministic: true, threads: 1}
eval: {num_visualize: 0}
"""


class FakeTime:
    now = 1000.0

    @classmethod
    def perf_counter(cls) -> float:
        return cls.now


def main(out: Path) -> None:
    clock_module.time = FakeTime  # type: ignore[assignment]
    original_step, original_fit = Trainer.train_step, Trainer.fit
    trained: list[list] = []

    def step(self: Trainer) -> dict:
        FakeTime.now += 2.0 if self.cfg.distill.losses else 1.0
        return original_step(self)

    def fit(self: Trainer) -> None:
        original_fit(self)
        trained.append([Path(self.cfg.output_dir).relative_to(out).as_posix(), self.iteration])

    Trainer.train_step, Trainer.fit = step, fit  # type: ignore[method-assign]
    me = os.environ["RANK"]  # the process group is gone after a command: rank() would read 0
    recipes = out / f"recipes{me}"  # each rank its own copy (the plan holds the resolved configs)
    recipes.mkdir(parents=True)
    (recipes / "baseline.yaml").write_text(BASELINE_YAML)
    (recipes / "kd.yaml").write_text("distill:\n  losses: [{name: kd, weight: 1.0}]\n")
    (recipes / "teacher.yaml").write_text("base: baseline.yaml\nname: t\nmodel: {name: test_tiny_teacher}\n")
    # By clock through the API, then by ratio through the command, which ends the process group (a new
    # one cannot be started in the same torchrun job).
    plan = plan_from_files(recipes, ["kd"], 2, ["time"], 4.0, out / "clock", recipes / "teacher.yaml",
                           time_by="clock")
    run_compare(plan)  # returns the table on rank 0 only
    codes = {"clock": 0}
    args = ["compare", str(recipes), "--methods", "kd", "--seeds", "2", "--budget", "4", "--match", "time",
            "--output", str(out / "ratio"), "--teacher-config", str(recipes / "teacher.yaml")]
    codes["ratio"] = cli_main(args)
    (out / f"rank{me}.json").write_text(json.dumps({"codes": codes, "trained": trained}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
