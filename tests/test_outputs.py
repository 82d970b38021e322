"""Issue 25, second trial: outputs are never replaced, an unwritable output folder is refused before any
work, every file is written atomically (a full disk leaves no 0-byte or temporary file), and Ctrl-C during
start-up is one line. Each test provokes the fault on purpose through the command line."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.test_export import make_checkpoint

import segkd
from _disk_faults import FullDisk
from _engine_helpers import tiny_config
from segkd.cli import main
from segkd.export.onnx_export import read_onnx_meta

SRC = Path(segkd.__file__).resolve().parents[1]  # the segkd under test, for the subprocess too


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-iteration tiny run (for eval and report)."""
    from segkd.engine import train

    return train(tiny_config(tmp_path_factory.mktemp("runs") / "base", iters=1))


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "imgs" / "x.png"
    path.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(path)
    return path


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------ outputs are never replaced
def test_predict_twice_into_the_same_out_keeps_the_first_predictions(tmp_path, image, capsys):
    first_model, _ = make_checkpoint(tmp_path / "a.pt")
    other_model, _ = make_checkpoint(tmp_path / "b.pt", name="test_tiny_teacher")
    out = tmp_path / "pred"
    assert main(["predict", str(first_model), str(image), "--out", str(out), "--no-progress"]) == 0
    first = _files(out)
    assert sorted(p.relative_to(out).as_posix() for p in first) == ["labels/x.png", "overlays/x.png"]
    capsys.readouterr()
    assert main(["predict", str(other_model), str(image), "--out", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert _files(out) == first  # byte for byte, and nothing added
    second = tmp_path / "pred-2"
    assert [p.relative_to(second).as_posix() for p in _files(second)] == ["labels/x.png", "overlays/x.png"]
    assert f"segkd predict: {out} already exists (kept); writing to {second}" in stdout
    assert f"wrote 1 label PNGs and overlays to {second}" in stdout


def test_export_twice_keeps_the_first_file(tmp_path, capsys):
    checkpoint, _ = make_checkpoint(tmp_path / "student.pt")
    assert main(["export", str(checkpoint), "--size", "32x32"]) == 0
    first = (tmp_path / "student.onnx").read_bytes()
    capsys.readouterr()
    assert main(["export", str(checkpoint), "--size", "48x48"]) == 0
    stdout = capsys.readouterr().out
    assert (tmp_path / "student.onnx").read_bytes() == first
    assert read_onnx_meta(tmp_path / "student.onnx").input_size == [32, 32]
    assert read_onnx_meta(tmp_path / "student-2.onnx").input_size == [48, 48]
    first_path, second_path = tmp_path / "student.onnx", tmp_path / "student-2.onnx"
    assert f"segkd export: {first_path} already exists (kept); writing to {second_path}" in stdout
    assert f"-> {second_path}" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student-2.onnx", "student.onnx", "student.pt"]


def test_an_export_name_is_taken_by_its_int8_file_too(tmp_path):
    from segkd.export import companions
    from segkd.outputs import unused_path

    (tmp_path / "best.int8.onnx").write_bytes(b"an earlier INT8 export")  # its float graph was moved away
    assert unused_path(tmp_path / "best.onnx", related=companions("onnx")) == tmp_path / "best-2.onnx"
    assert unused_path(tmp_path / "best.ts", related=companions("torchscript")) == tmp_path / "best.ts"


def test_report_twice_into_the_same_out_keeps_the_first_report(run, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["report", str(run), "--out", str(out), "--no-qualitative"]
    assert main(argv) == 0
    first = _files(out)
    assert "report.md" in {p.name for p in first}
    capsys.readouterr()
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert _files(out) == first
    assert (tmp_path / "report-2" / "report.md").is_file()
    assert f"already exists (kept); writing to {tmp_path / 'report-2'}" in stdout
    assert f"wrote {tmp_path / 'report-2' / 'report.md'}" in stdout


def test_numbering_rules(tmp_path):
    from segkd.outputs import unused_path

    folder = tmp_path / "best_multiscale_0.5-1_flip"
    assert unused_path(folder, folder=True) == folder  # missing
    folder.mkdir()
    assert unused_path(folder, folder=True) == folder  # empty: holds no earlier output
    (folder / "metrics.json").write_text("{}")
    assert unused_path(folder, folder=True) == tmp_path / "best_multiscale_0.5-1_flip-2"
    (tmp_path / "b.json").write_text("{}")
    (tmp_path / "b-2.json").write_text("{}")
    assert unused_path(tmp_path / "b.json") == tmp_path / "b-3.json"


# --------------------------------------------------------------- unwritable output: refused before work
def _denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied")


def _never(calls: list[str], name: str):
    def work(*args, **kwargs):
        calls.append(name)
        raise AssertionError(f"{name} ran although the output folder is not writable")

    return work


def _unwritable_cases(tmp_path: Path, run: Path, image: Path) -> dict[str, tuple[list[str], str, str, Path]]:
    """command -> (argv, module, attribute doing the command's first real work, the folder it names)."""
    checkpoint, _ = make_checkpoint(tmp_path / "s.pt")
    ro = tmp_path / "ro"
    best = run / "checkpoints" / "best.pt"
    cache_teacher = ["distill.teacher={name: test_tiny_teacher}", "distill.losses=[{name: kd}]",
                     "distill.allow_untrained_teacher=true"]
    return {
        "eval": (["eval", str(run / "config.yaml"), f"checkpoint={best}", f"output_dir={ro}"],
                 "segkd.engine.builder", "build_data", ro / "evals" / "best_whole"),
        "predict": (["predict", str(checkpoint), str(image), "--out", str(ro / "pred")],
                    "segkd.export", "load_model", ro / "pred"),
        "report": (["report", str(run), "--out", str(ro / "rep")], "segkd.report", "load_run", ro / "rep"),
        "cache-teacher": (["cache-teacher", str(run / "config.yaml"), *cache_teacher, "--out", str(ro / "c")],
                          "segkd.data", "build_dataset_from_config", ro / "c"),
        "bench": (["bench", "loss", "kd", "--sizes", "1x4x4", "--out", str(ro / "b.json")],
                  "segkd.bench.loss", "bench_loss", ro),
        "export": (["export", str(checkpoint), "--out", str(ro / "m.onnx")],
                   "segkd.export.loading", "load_student", ro),
        "compare": (["compare", str(_recipes(tmp_path)), "--methods", "kd", "--output", str(ro / "cmp")],
                    "segkd.compare", "run_plan", ro / "cmp"),
    }


def _recipes(tmp_path: Path) -> Path:
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "baseline.yaml").write_text("model: {name: test_tiny_student}\n")
    (folder / "kd.yaml").write_text("distill:\n  teacher: {name: test_tiny_teacher, checkpoint: t.pt}\n"
                                    "  losses: [{name: kd, weight: 1.0}]\n")
    return folder


UNWRITABLE = ["eval", "predict", "report", "cache-teacher", "bench", "export", "compare"]


@pytest.mark.parametrize("command", UNWRITABLE)
def test_an_unwritable_output_folder_is_one_line_before_any_work(
    command, run, image, tmp_path, monkeypatch, capsys
):
    import importlib

    argv, module, attribute, folder = _unwritable_cases(tmp_path, run, image)[command]
    calls: list[str] = []
    monkeypatch.setattr(importlib.import_module(module), attribute, _never(calls, attribute))
    # Tests run as root, where chmod cannot make a folder read-only: the write probe is denied instead.
    monkeypatch.setattr(tempfile, "TemporaryFile", _denied)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"segkd {command}: error: cannot write to " in err
    assert f" {folder}: Permission denied; choose" in err
    assert not calls and not (tmp_path / "ro").exists()


def test_an_output_folder_under_a_file_is_one_line(tmp_path, image, capsys):
    from segkd.outputs import OutputNotWritable, check_writable

    checkpoint, _ = make_checkpoint(tmp_path / "s.pt")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where the output folder's parent should be")
    assert main(["predict", str(checkpoint), str(image), "--out", str(blocker / "pred")]) == 2
    err = capsys.readouterr().err
    assert err == (f"segkd predict: error: cannot write to the output folder {blocker / 'pred'}: "
                   f"{blocker} is a file, not a folder; choose a writable --out\n")
    with pytest.raises(OutputNotWritable, match="is a file, not a folder"):
        check_writable(blocker / "a" / "b")


# ------------------------------------------------------------------------------- full disk: atomic writes


def _full_disk_cases(tmp_path: Path, run: Path, image: Path) -> dict[str, tuple[list[str], Path, str]]:
    """command -> (argv, the folder it writes in, the first file it writes)."""
    (tmp_path / "in").mkdir()
    checkpoint, _ = make_checkpoint(tmp_path / "in" / "s.pt")
    out = tmp_path / "out"
    best = run / "checkpoints" / "best.pt"
    return {
        "predict": (["predict", str(checkpoint), str(image), "--out", str(out), "--no-progress"], out,
                    "labels/x.png"),
        "export": (["export", str(checkpoint), "--out", str(out / "m.onnx")], out, ".m.exporting.onnx"),
        "eval": (["eval", str(run / "config.yaml"), f"checkpoint={best}", f"output_dir={out}"], out,
                 "evals/best_whole/metrics.json"),
        "report": (["report", str(run), "--out", str(out), "--no-qualitative"], out, "runs.csv"),
        "bench": (["bench", "loss", "kd", "--sizes", "1x4x4", "--iters", "1", "--no-naive", "--out",
                   str(out / "b.json")], out, "b.json"),
    }


@pytest.mark.parametrize("command", ["predict", "export", "eval", "report", "bench"])
def test_a_full_disk_leaves_no_partial_or_temporary_file(command, run, image, tmp_path, monkeypatch, capsys):
    import segkd.outputs as outputs

    argv, out, first_file = _full_disk_cases(tmp_path, run, image)[command]
    monkeypatch.setattr(outputs, "_open_for_write", FullDisk)
    assert main(argv) == 1
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"segkd {command}: error: no space left on the disk while writing {out / first_file}; " in err
    assert not [p for p in out.rglob("*") if p.is_file()]  # no 0-byte, temporary or staged file


def test_atomic_write_keeps_the_earlier_file_on_a_full_disk(tmp_path, monkeypatch):
    import segkd.outputs as outputs
    from segkd.outputs import write_text

    path = write_text(tmp_path / "metrics.json", '{"miou": 1}')
    monkeypatch.setattr(outputs, "_open_for_write", FullDisk)
    with pytest.raises(outputs.DiskFullError, match="an earlier file of that name is intact"):
        write_text(path, '{"miou": 2}')
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"miou": 1} and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_folder_that_stops_being_writable_mid_command_is_one_line(tmp_path, monkeypatch):
    import segkd.outputs as outputs

    def read_only(fd: int, path: Path):
        os.close(fd)
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(outputs, "_open_for_write", read_only)
    with pytest.raises(outputs.OutputNotWritable) as info:
        outputs.write_text(tmp_path / "summary.json", "{}")
    assert str(info.value) == (f"cannot write {tmp_path / 'summary.json'}: Read-only file system; no partial "
                               "file was left and an earlier file of that name is intact")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- Ctrl-C during start-up
_INTERRUPT_EVERY_COMMAND = """
import contextlib, io, json, signal, sys
from pathlib import Path

import segkd.data
import segkd.engine.builder as builder
import segkd.export
import segkd.export.loading
import segkd.report
from segkd.cli import main


signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job ignores it)


def ctrl_c(*args, **kwargs):
    signal.raise_signal(signal.SIGINT)  # as the terminal sends it, in the middle of building
    raise AssertionError("SIGINT did not interrupt")


# The start-up step of each command: building the student (train), the data (eval), the teacher's data
# (cache-teacher), loading the model (predict, export), reading the runs (report).
builder.build_student = builder.build_data = segkd.data.build_dataset_from_config = ctrl_c
segkd.export.load_model = segkd.export.loading.load_student = segkd.report.load_run = ctrl_c
tmp, config = Path(sys.argv[1]), sys.argv[2]
tiny = sys.argv[3:]
(tmp / "s.pt").write_bytes(b"")
commands = {
    "train": ["train", config, *tiny],
    "eval": ["eval", config, *tiny, f"checkpoint={tmp / 's.pt'}"],
    "cache-teacher": ["cache-teacher", config, *tiny, "distill.teacher={name: test_tiny_teacher}",
                      "distill.losses=[{name: kd}]", "distill.allow_untrained_teacher=true", "--out",
                      str(tmp / "cache")],
    "predict": ["predict", str(tmp / "s.pt"), str(tmp), "--out", str(tmp / "pred")],
    "export": ["export", str(tmp / "s.pt")],
    "report": ["report", str(tmp), "--out", str(tmp / "rep")],
}
results = {}
for name, argv in commands.items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    results[name] = [code, err.getvalue()]
print(json.dumps(results))
"""


def test_ctrl_c_during_start_up_is_one_line_for_every_command(tmp_path):
    from _engine_helpers import tiny_overrides

    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(Path(__file__).parent)])}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_INTERRUPT_EVERY_COMMAND), str(tmp_path), str(config),
         *tiny_overrides(tmp_path / "run", iters=2)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(results) == ["cache-teacher", "eval", "export", "predict", "report", "train"]
    for command, (code, err) in results.items():
        assert code == 130, (command, err)
        assert err == (f"segkd {command}: interrupted during start-up, before it wrote anything; nothing was "
                       "trained or written\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "s.pt"])  # no run, cache or output


def test_training_interrupted_under_compare_is_one_line(monkeypatch, capsys, tmp_path):
    import signal

    import segkd.compare
    from segkd.engine.stop import TrainingInterrupted

    def interrupted(*args, **kwargs):  # what a run inside the comparison raises after saving on Ctrl-C
        raise TrainingInterrupted(signal.SIGINT, 5, "runs/compare/x/iters/kd/seed0/checkpoints/latest.pt")

    monkeypatch.setattr(segkd.compare, "plan_from_files", lambda *args: None)
    monkeypatch.setattr(segkd.compare, "run_compare", interrupted)
    assert main(["compare", str(tmp_path), "--methods", "kd"]) == 130
    assert capsys.readouterr().err == (
        "segkd compare: stopped by SIGINT at iteration 5; saved runs/compare/x/iters/kd/seed0/checkpoints/"
        "latest.pt; continue with the same command and train.resume=auto\n"
    )


def test_a_second_ctrl_c_names_what_is_kept(monkeypatch, capsys, tmp_path):
    import signal

    import segkd.engine
    from segkd.engine.stop import GracefulStop

    def train_pressing_ctrl_c_twice(cfg):
        with GracefulStop():
            signal.raise_signal(signal.SIGINT)  # first: finish the iteration and save
            signal.raise_signal(signal.SIGINT)  # second: abort now
        raise AssertionError("the second SIGINT did not abort")

    monkeypatch.setattr(segkd.engine, "train", train_pressing_ctrl_c_twice)
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    try:
        code = main(["train", str(config)])
    except KeyboardInterrupt as err:  # the old behaviour: a traceback
        pytest.fail(f"KeyboardInterrupt reached the caller: {err!r}")
    assert code == 130
    assert capsys.readouterr().err == (
        "segkd train: aborted by a second SIGINT without saving this iteration; the last checkpoint saved is "
        "intact (continue with train.resume=auto)\n"
    )
