"""Two-process torchrun (gloo, CPU) training: mIoU reduction and identical weights on both ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.dist
def test_two_process_gloo_training(tmp_path: Path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(HERE / "_dist_train_check.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["reduction_ok"]
    assert verdict["identical"] and verdict["changed"]
    assert verdict["ddp_pixels"] == verdict["single_pixels"]
    assert verdict["ddp_miou"] == pytest.approx(verdict["single_miou"], abs=1e-9)
    assert (tmp_path / "run" / "checkpoints" / "latest.pt").is_file()
