"""Knowledge Adaptation stage 1 under a two-process torchrun (gloo, CPU): the processes average their
auto-encoder gradients, so the saved auto-encoder is the one of the global batch, not rank 0's alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.dist
def test_autoencoder_gradients_are_averaged_over_processes(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "_dist_ka_check.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["ranks_identical"]
    assert verdict["max_diff_to_single"] < 1e-5  # the auto-encoder of the two ranks' batches together
    assert verdict["diff_rank0_alone_to_single"] > 1e-3  # rank 0's batches alone give another one
