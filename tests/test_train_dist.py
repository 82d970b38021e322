"""Two-process torchrun (gloo, CPU) training: mIoU reduction, identical weights and BatchNorm buffers on
both ranks, and a validation mIoU that is the mIoU of the saved checkpoint.

The torchrun job runs once per module (about 10 s); each test reads its verdict.
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
def verdict(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("dist_train")
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
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "run" / "checkpoints" / "latest.pt").is_file()
    return json.loads((out / "verdict.json").read_text())


@pytest.mark.dist
def test_two_process_gloo_training(verdict: dict):
    assert verdict["reduction_ok"]
    assert verdict["identical"] and verdict["changed"]
    assert verdict["ddp_pixels"] == verdict["single_pixels"]
    assert verdict["ddp_miou"] == pytest.approx(verdict["single_miou"], abs=1e-9)


@pytest.mark.dist
def test_two_process_bn_buffers_identical_and_validation_matches_checkpoint(verdict: dict):
    assert verdict["num_bn_buffers"] > 0  # the tiny student has BatchNorm: the check is not vacuous
    assert verdict["bn_buffers_identical"]
    assert verdict["ddp_miou"] == pytest.approx(verdict["checkpoint_miou"], abs=1e-9)
    assert verdict["logged_val_miou"] == pytest.approx(verdict["checkpoint_miou"], abs=1e-9)


@pytest.mark.dist
def test_two_process_distillation_without_unused_parameter_search(verdict: dict):
    assert verdict["distilled_find_unused"] is False
    assert {"discriminator", "cirkd_memory"} <= set(verdict["distilled_has"])
    assert verdict["distilled_differ"] == []  # student, discriminator, projector and queues agree


@pytest.mark.dist
def test_two_process_training_with_unlabelled_images(verdict: dict):
    """Mixed batches under DDP: disjoint draws per rank, identical weights and CIRKD queues on both."""
    assert verdict["unlabeled_flags"] == [True, True, False, False]
    assert verdict["unlabeled_names_disjoint"]
    assert verdict["unlabeled_differ"] == []
    assert verdict["unlabeled_queue_filled"] > 0
