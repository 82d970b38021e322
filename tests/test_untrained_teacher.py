"""A teacher without ``distill.teacher.checkpoint`` is an error unless ``distill.allow_untrained_teacher``."""

from __future__ import annotations

from pathlib import Path

import pytest

from _engine_helpers import tiny_config, tiny_overrides
from segkd.cli import main as cli_main
from segkd.engine import train
from segkd.engine.builder import build_teacher

KD = {"distill__teacher": "{name: test_tiny_teacher}", "distill__losses": "[{name: kd}]"}


def test_untrained_teacher_is_refused_naming_the_keys(tmp_path: Path):
    cfg = tiny_config(tmp_path / "run", iters=1, **KD)
    with pytest.raises(ValueError, match=r"distill\.teacher\.checkpoint is not set.*"
                                         r"distill\.allow_untrained_teacher=true"):
        build_teacher(cfg, 9)
    with pytest.raises(ValueError, match=r"distill\.teacher\.checkpoint"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cli_prints_one_line_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture):
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    overrides = tiny_overrides(tmp_path / "cli", iters=1)
    overrides += ["distill.teacher.name=test_tiny_teacher", "distill.losses=[{name: kd}]"]
    assert cli_main(["train", str(config), *overrides]) != 0
    err = capsys.readouterr().err
    assert "distill.teacher.checkpoint is not set" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_opt_in_trains_with_a_random_teacher(tmp_path: Path):
    run = train(tiny_config(tmp_path / "run", iters=1, distill__allow_untrained_teacher="true", **KD))
    assert (run / "checkpoints" / "latest.pt").is_file()


def test_teacher_checkpoint_needs_no_opt_in(tmp_path: Path):
    teacher_run = train(tiny_config(tmp_path / "teacher", iters=1, model__name="test_tiny_teacher"))
    ckpt = teacher_run / "checkpoints" / "latest.pt"
    teacher = f"{{name: test_tiny_teacher, checkpoint: {ckpt}}}"
    cfg = tiny_config(tmp_path / "kd", iters=1, distill__teacher=teacher)
    assert not build_teacher(cfg, 9).training
