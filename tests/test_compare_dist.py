"""``segkd compare --match time`` under ``torchrun --nproc_per_node=2`` (gloo, CPU), by step ratio and by
clock, with a fake clock so that every figure is exact (see ``_dist_compare_check.py``).

The torchrun job runs once per module (about 30 s); each test reads what the ranks wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist_compare")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "_dist_compare_check.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.dist
def test_both_ranks_train_the_same_runs_for_the_same_iterations(job: Path):
    first, second = _ranks(job)
    assert first["codes"] == second["codes"] == {"ratio": 0, "clock": 0}
    assert first["trained"] == second["trained"]
    iters = dict(first["trained"])
    for seed in (0, 1):
        assert iters[f"ratio/time/baseline/seed{seed}"] == 4
        assert iters[f"ratio/time/kd/seed{seed}"] == 2  # budget 4 / measured ratio 2.0
        assert iters[f"clock/time/kd/seed{seed}"] == 2  # 4 baseline seconds / 2 s per iteration


@pytest.mark.dist
def test_the_ratio_is_measured_once_over_both_ranks_and_the_table_shows_equal_compute(job: Path):
    costs = json.loads((job / "ratio" / "time" / "step_costs.json").read_text())
    assert costs["kd"] == {"student_step_s": 1.0, "step_s": 2.0, "ratio": 2.0}
    for time_by in ("ratio", "clock"):
        data = json.loads((job / time_by / "compare.json").read_text())
        rows = data["results"]["time"]
        assert rows["baseline"]["train_time_s"] == rows["kd"]["train_time_s"] == 4.0
        assert rows["kd"]["compute_vs_baseline"] == 0.0 and not rows["kd"]["compute_flag"]
        assert len(data["runs"]) == 4 and rows["kd"]["gain"]["n"] == 2
