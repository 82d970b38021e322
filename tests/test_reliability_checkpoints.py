"""Faults around checkpoints and the run directory, provoked on purpose (issue: no code from files, no lost
work). Each test checks the one-line message names the file or key, and that the earlier state is intact."""

from __future__ import annotations

import errno
import json
import os
import signal
import zipfile
from pathlib import Path

import pytest
import torch

from _disk_faults import FullDisk
from _engine_helpers import tiny_config, tiny_overrides
from segkd.checkpoint_io import (
    CorruptCheckpointError,
    DiskFullError,
    UnsafeCheckpointError,
    read_checkpoint,
    state_checksum,
    write_checkpoint,
)
from segkd.cli import main as cli_main
from segkd.engine import train
from segkd.engine.checkpoint import ResumeConfigError, load_checkpoint
from segkd.engine.stop import TrainingInterrupted
from segkd.engine.trainer import Trainer, ValidationFailed


class _Payload:
    """Unpickling this creates a folder: stands for arbitrary code a crafted checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _crafted_checkpoint(path: Path, marker: Path, base: dict | None = None) -> Path:
    state = dict(base or {"model": {"w": torch.ones(1)}})
    state["extra"] = _Payload(marker)
    torch.save(state, path)
    return path


def _empty_config(tmp_path: Path) -> Path:
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    return config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-iteration tiny run (shared by the read-only tests below)."""
    return train(tiny_config(tmp_path_factory.mktemp("trained") / "run", iters=2))


# ------------------------------------------------------------------------------------------- security
def test_own_checkpoints_load_with_weights_only(trained_run: Path):
    for name in ("latest.pt", "best.pt"):
        state = torch.load(trained_run / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert state["iteration"] == 2 and state["checksum"] == state_checksum(state)


def test_crafted_checkpoint_is_refused_everywhere_and_runs_nothing(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture
):
    marker = tmp_path / "code_ran"
    good = load_checkpoint(trained_run / "checkpoints" / "latest.pt")
    good.pop("checksum")
    crafted = _crafted_checkpoint(tmp_path / "evil.pt", marker, good)
    config = _empty_config(tmp_path)
    base = tiny_overrides(tmp_path / "victim", iters=2)
    expected = "contains objects that are not tensors; segkd never unpickles arbitrary objects"
    with pytest.raises(UnsafeCheckpointError, match=expected):
        read_checkpoint(crafted)
    calls = {
        "eval": ["eval", str(config), *base, f"checkpoint={crafted}"],
        "resume": ["train", str(config), *base, f"train.resume={crafted}"],
        "teacher": [
            "train", str(config), *tiny_overrides(tmp_path / "student", iters=2),
            f"distill.teacher={{name: test_tiny_student, checkpoint: {crafted}}}",
            "distill.losses=[{name: kd}]",
        ],
        "model checkpoint": ["train", str(config), *tiny_overrides(tmp_path / "m", iters=2),
                             f"model.checkpoint={crafted}"],
        "export": ["export", str(crafted), "--format", "onnx", "--size", "32x32"],
    }
    for what, argv in calls.items():
        assert cli_main(argv) == 2, what
        err = capsys.readouterr().err
        assert expected in err and str(crafted) in err, (what, err)
    from segkd.models.pretrained import load_backbone_weights

    with pytest.raises(UnsafeCheckpointError):
        load_backbone_weights(torch.nn.Linear(1, 1), crafted)
    from segkd.losses.ka import load_autoencoder

    with pytest.raises(UnsafeCheckpointError):
        load_autoencoder(crafted)
    assert not marker.exists()  # nothing ran


# ---------------------------------------------------------------------------------- damaged checkpoints
def _bit_flip(path: Path) -> None:
    """Flip one byte inside the largest tensor record of a torch zip checkpoint."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


DAMAGE = {
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "garbage": lambda p: p.write_bytes(b"not a checkpoint at all" * 40),
    "bit flip": _bit_flip,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoint_one_line_error(tmp_path: Path, damage: str):
    path = write_checkpoint({"model": {"w": torch.arange(4096.0)}, "iteration": 1}, tmp_path / "latest.pt")
    DAMAGE[damage](path)
    with pytest.raises(CorruptCheckpointError) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_resume_falls_back_to_previous_good_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture):
    common = dict(iters=4, train__ckpt_interval=1)
    run = train(tiny_config(tmp_path / "run", iters=3, train__ckpt_interval=1))
    latest, previous = run / "checkpoints" / "latest.pt", run / "checkpoints" / "previous.pt"
    assert load_checkpoint(previous)["iteration"] == 2 and load_checkpoint(latest)["iteration"] == 3
    _bit_flip(latest)
    capsys.readouterr()
    resumed = train(tiny_config(tmp_path / "run", train__resume="auto", **common))
    out = capsys.readouterr().out
    assert "checksum mismatch" in out and str(previous) in out and "iteration 2" in out
    assert load_checkpoint(resumed / "checkpoints" / "latest.pt")["iteration"] == 4
    # An explicitly named damaged file is an error that points at the previous one.
    _bit_flip(latest)
    config = _empty_config(tmp_path)
    argv = ["train", str(config), *tiny_overrides(tmp_path / "run", iters=5), f"train.resume={latest}"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert str(latest) in err and "previous.pt" in err


# ------------------------------------------------------------------------------------- disk and folders


def test_disk_full_keeps_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import segkd.outputs as io

    path = write_checkpoint({"model": {"w": torch.ones(3)}, "iteration": 1}, tmp_path / "latest.pt")
    monkeypatch.setattr(io, "_open_for_write", FullDisk)
    with pytest.raises(DiskFullError, match="no space left") as info:
        write_checkpoint({"model": {"w": torch.zeros(3)}, "iteration": 2}, path, keep_previous=True)
    monkeypatch.undo()
    assert str(path) in info.value.strerror
    assert read_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]  # no temp file left


def test_disk_full_during_training_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    import segkd.outputs as io

    opened = []

    def fills_on_third_write(fd: int, path: Path):
        if path.suffix == ".pt":
            opened.append(fd)
        return FullDisk(fd) if len(opened) >= 3 else os.fdopen(fd, "wb")

    monkeypatch.setattr(io, "_open_for_write", fills_on_third_write)
    argv = ["train", str(_empty_config(tmp_path)), *tiny_overrides(tmp_path / "run", iters=3)]
    argv += ["train.val_interval=1", "train.ckpt_interval=1"]
    assert cli_main(argv) == 1  # iteration 1 writes best.pt and latest.pt; the disk is full after that
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "no space left on the disk" in err and ("latest.pt" in err or "best.pt" in err)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["iteration"] == 1


def test_unwritable_output_dir_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    import segkd.outputs as outputs

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    # Tests run as root in CI, where chmod cannot make a folder read-only: the write probe is patched.
    monkeypatch.setattr(outputs.tempfile, "TemporaryFile", denied)
    steps = []
    monkeypatch.setattr(Trainer, "train_step", lambda self: steps.append(1))
    argv = ["train", str(_empty_config(tmp_path)), *tiny_overrides(tmp_path / "ro", iters=2)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot write to the run directory {tmp_path / 'ro'}: Permission denied" in err
    assert not steps and not (tmp_path / "ro" / "config.yaml").exists()


def test_training_into_an_existing_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture):
    run = train(tiny_config(tmp_path / "run", iters=2))
    before = {p: p.read_bytes() for p in [run / "config.yaml", *sorted((run / "checkpoints").iterdir())]}
    argv = ["train", str(_empty_config(tmp_path)), *tiny_overrides(run, iters=3)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "train.resume=auto" in err and "output_dir" in err
    assert {p: p.read_bytes() for p in before} == before


def test_resume_with_changed_model_names_the_keys(tmp_path: Path):
    run = train(tiny_config(tmp_path / "run", iters=2))
    kept = {p: p.read_bytes() for p in (run / "checkpoints" / "latest.pt", run / "config.yaml")}
    with pytest.raises(ResumeConfigError) as info:
        train(tiny_config(run, iters=3, train__resume="auto", model__name="test_tiny_teacher", optim__lr=0.1))
    message = str(info.value)
    assert "model.name: 'test_tiny_student' -> 'test_tiny_teacher'" in message and "\n" not in message
    assert "optim.lr: 0.01 -> 0.1" in message  # restored from the optimizer state: would not take effect
    assert {p: p.read_bytes() for p in kept} == kept


def test_resume_records_the_settings_it_applies(tmp_path: Path):
    run = train(tiny_config(tmp_path / "run", iters=2))
    train(tiny_config(run, iters=3, train__resume="auto", train__log_interval=5))
    change = {"train.iters": [2, 3], "train.log_interval": [1, 5]}
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert {"iter": 2, "event": "resume", "changed": change} in events
    assert json.loads((run / "summary.json").read_text())["config_changes"] == [
        {"iteration": 2, "changes": change}
    ]
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["config_changes"] == [
        {"iteration": 2, "changes": change}
    ]
    assert "iters: 3" in (run / "config.yaml").read_text()  # the config now in effect


# ------------------------------------------------------------------------------------- stopping early
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_resumable_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, sig: int
):
    original = Trainer.train_step

    def signalled_in_iteration_two(self: Trainer) -> dict:
        if self.iteration == 1:
            os.kill(os.getpid(), sig)  # arrives mid-iteration: the iteration still completes
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", signalled_in_iteration_two)
    handler_before = signal.getsignal(sig)
    argv = ["train", str(_empty_config(tmp_path)), *tiny_overrides(tmp_path / "run", iters=4)]
    assert cli_main(argv) == 128 + sig
    err = capsys.readouterr().err
    assert signal.Signals(sig).name in err and "train.resume=auto" in err
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    assert load_checkpoint(latest)["iteration"] == 2
    monkeypatch.setattr(Trainer, "train_step", original)
    assert signal.getsignal(sig) == handler_before  # the handlers are restored after training
    run = train(tiny_config(tmp_path / "run", iters=4, train__resume="auto"))
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["iteration"] == 4


def test_validation_error_keeps_the_trained_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import segkd.engine.trainer as trainer_module

    def broken_eval(*args, **kwargs):
        raise OSError("image file is truncated (val/0003.png)")

    monkeypatch.setattr(trainer_module, "run_evaluation", broken_eval)
    with pytest.raises(ValidationFailed, match="val/0003.png") as info:
        train(tiny_config(tmp_path / "run", iters=3))
    assert "latest.pt" in str(info.value)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["iteration"] == 3


def test_training_interrupted_message_names_resume():
    err = TrainingInterrupted(signal.SIGTERM, 7, "runs/x/checkpoints/latest.pt")
    assert err.exit_code == 143 and "SIGTERM" in str(err) and "iteration 7" in str(err)


def test_one_reader_and_one_writer_for_checkpoint_files():
    """Only segkd.checkpoint_io calls torch.load / torch.save (the weights_only policy lives in one place)."""
    import ast

    src = Path(__file__).parents[1] / "src" / "segkd"

    def calls_torch_load_or_save(path: Path) -> bool:
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            is_attr = isinstance(node, ast.Call) and isinstance(func, ast.Attribute)
            if is_attr and func.attr in ("load", "save") and getattr(func.value, "id", None) == "torch":
                return True
        return False

    offenders = [str(p.relative_to(src)) for p in src.rglob("*.py") if calls_torch_load_or_save(p)]
    assert offenders == ["checkpoint_io.py"]
