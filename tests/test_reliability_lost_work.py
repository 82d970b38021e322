"""Second fault trial (issue 25), lost work: a damaged checkpoint never replaces a good one, every
checkpoint of a run is named when none can be resumed, a bad training pair found mid-run leaves a resumable
checkpoint (or is skipped with ``data.skip_bad``), and a wrong class count or iteration count is one line
naming the key that was set, with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _engine_helpers import tiny_config, tiny_overrides
from segkd.checkpoint_io import read_checkpoint, write_checkpoint
from segkd.cli import main as cli_main
from segkd.data.loaders import InfiniteSampler
from segkd.data.preflight import sample_indices
from segkd.engine import train
from segkd.engine.checkpoint import load_checkpoint
from test_reliability_checkpoints import _bit_flip, _empty_config


# ------------------------------------------------------------------------------- damaged checkpoints
def test_a_damaged_latest_is_never_rotated_over_a_good_previous(tmp_path: Path):
    previous = write_checkpoint({"model": {"w": torch.ones(64)}, "iteration": 1}, tmp_path / "previous.pt")
    latest = write_checkpoint({"model": {"w": torch.ones(64)}, "iteration": 2}, tmp_path / "latest.pt")
    _bit_flip(latest)
    good = previous.read_bytes()
    write_checkpoint({"model": {"w": torch.zeros(64)}, "iteration": 3}, latest, keep_previous=True)
    assert previous.read_bytes() == good  # the damaged file was replaced, not kept as previous.pt
    assert read_checkpoint(latest)["iteration"] == 3
    write_checkpoint({"model": {"w": torch.zeros(64)}, "iteration": 4}, latest, keep_previous=True)
    assert read_checkpoint(previous)["iteration"] == 3  # a readable latest.pt rotates as before


def test_resume_from_previous_keeps_it_until_a_new_good_latest_exists(tmp_path: Path):
    run = train(tiny_config(tmp_path / "run", iters=3, train__ckpt_interval=1))
    latest, previous = run / "checkpoints" / "latest.pt", run / "checkpoints" / "previous.pt"
    _bit_flip(latest)
    train(tiny_config(run, iters=3, train__ckpt_interval=1, train__resume="auto"))  # from previous.pt (2)
    assert load_checkpoint(latest)["iteration"] == 3
    assert load_checkpoint(previous)["iteration"] == 2  # the damaged latest.pt did not take its place


def test_resume_with_latest_and_previous_damaged_names_every_checkpoint_and_best(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    run = train(tiny_config(tmp_path / "run", iters=3, train__ckpt_interval=1))
    checkpoints = run / "checkpoints"
    _bit_flip(checkpoints / "latest.pt")
    (checkpoints / "previous.pt").write_bytes(b"")
    capsys.readouterr()
    argv = ["train", str(_empty_config(tmp_path)), *tiny_overrides(run, iters=4), "train.resume=auto"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "latest.pt: checksum mismatch" in err and "previous.pt: the file is empty" in err
    assert "best.pt: readable (iteration 3)" in err
    assert f"train.resume={checkpoints / 'best.pt'}" in err
    assert cli_main([*argv[:-1], f"train.resume={checkpoints / 'best.pt'}"]) == 0  # the advice works
    assert load_checkpoint(checkpoints / "latest.pt")["iteration"] == 4


# ---------------------------------------------------------------------------------- bad training data
PAIRS, BATCH = 20, 2


def _write_pair(root: Path, split: str, stem: str, rng: np.random.Generator) -> None:
    for kind in ("images", "labels"):
        (root / kind / split).mkdir(parents=True, exist_ok=True)
    image, label = root / "images" / split / f"{stem}.png", root / "labels" / split / f"{stem}.png"
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
    Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8)).save(label)


def _damage(path: Path, how: str) -> None:
    if how == "label value":
        Image.fromarray(np.full((32, 32), 7, np.uint8)).save(path)
    else:  # bytes inside the PNG's compressed data: the header and the IEND marker stay intact
        raw = bytearray(path.read_bytes())
        start = raw.index(b"IDAT") + 20
        raw[start:start + 8] = bytes(b ^ 0xFF for b in raw[start:start + 8])
        path.write_bytes(bytes(raw))


def _bad_data(tmp_path: Path, how: str) -> tuple[Path, Path, int]:
    """A folder dataset of 20 train pairs with one bad pair outside the pre-flight's 16 decoded samples,
    first drawn after at least one iteration; returns (root, bad file, iterations finished before it)."""
    root, rng = tmp_path / "data", np.random.default_rng(0)
    for i in range(PAIRS):
        _write_pair(root, "train", f"s{i:03d}", rng)
    for i in range(2):
        _write_pair(root, "val", f"v{i:03d}", rng)
    (root / "classes.txt").write_text("a\nb\nc\n")
    unchecked = set(range(PAIRS)) - set(sample_indices(PAIRS, 16))
    stream = iter(InfiniteSampler(PAIRS, seed=0))
    position, index = next((p, i) for p, (i, _) in enumerate(stream) if p >= BATCH and i in unchecked)
    bad = root / ("labels" if how == "label value" else "images") / "train" / f"s{index:03d}.png"
    _damage(bad, how)
    return root, bad, position // BATCH


def _folder_overrides(out: Path, root: Path, iters: int, **extra: object) -> list[str]:
    return tiny_overrides(out, iters, data__name="folder", data__root=root, data__options="{}", **extra)


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "latest.pt")["model"]


@pytest.mark.parametrize("how, workers", [("label value", 0), ("damaged png", 1)])
def test_a_bad_pair_found_mid_run_saves_a_checkpoint_and_can_be_skipped_deterministically(
    tmp_path: Path, capsys: pytest.CaptureFixture, how: str, workers: int
):
    root, bad, done = _bad_data(tmp_path, how)
    iters = done + 2
    config = str(_empty_config(tmp_path))
    run = tmp_path / "run"
    assert cli_main(["train", config, *_folder_overrides(run, root, iters, data__workers=workers)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    latest = run / "checkpoints" / "latest.pt"
    assert err.startswith(f"segkd train: error: training data error at iteration {done + 1}: ")
    assert str(bad) in err and f"saved a resumable checkpoint {latest} (iteration {done})" in err
    assert "data.skip_bad=true" in err and "train.resume=auto" in err
    assert load_checkpoint(latest)["iteration"] == done
    # Resume past it: skip bad pairs from here on.
    resume = _folder_overrides(run, root, iters, data__skip_bad="true", train__resume="auto")
    assert cli_main(["train", config, *resume]) == 0
    printed = "".join(capsys.readouterr())
    assert "skipped a bad training pair (data.skip_bad): " in printed and str(bad) in printed
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    skipped = [e for e in events if e.get("event") == "skipped"]
    assert len(skipped) >= 1 and all(str(bad) in e["problem"] for e in skipped)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped"] == [{"iteration": e["iter"], "problem": e["problem"]} for e in skipped]
    # The same weights as a run that skipped from the start (and with loader workers).
    fresh = tmp_path / "fresh"
    argv = ["train", config, *_folder_overrides(fresh, root, iters, data__skip_bad="true", data__workers=2)]
    assert cli_main(argv) == 0
    a, b = _final_weights(run), _final_weights(fresh)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_skip_bad_turns_the_pre_flight_problems_of_the_training_split_into_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    root, _, _ = _bad_data(tmp_path, "label value")
    sampled = root / "labels" / "train" / "s000.png"  # in the pre-flight's decoded sample
    _damage(sampled, "label value")
    config = str(_empty_config(tmp_path))
    assert cli_main(["train", config, *_folder_overrides(tmp_path / "a", root, 2)]) == 2
    assert "data check before training found 1 problem(s)" in capsys.readouterr().err
    argv = ["train", config, *_folder_overrides(tmp_path / "b", root, 2, data__skip_bad="true")]
    assert cli_main(argv) == 0
    out = capsys.readouterr()
    assert "data.skip_bad: the data check found 1 problem(s) in train, skipped when drawn; first: " in out.err
    assert str(sampled) in out.err


# ------------------------------------------------------------------------------ settings named by key
def test_model_num_classes_other_than_the_datasets_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    for k in (2, 12):
        argv = ["train", str(_empty_config(tmp_path)), *tiny_overrides(tmp_path / f"run{k}", iters=2),
                f"model.num_classes={k}"]
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"model.num_classes={k} but the dataset (data.name=synthetic) has 9 classes" in err
        assert not (tmp_path / f"run{k}").exists()


@pytest.mark.parametrize("override, expected", [
    ("train.iters=0", "config key 'train.iters': must be positive, got 0"),
    ("distill.teacher={name: test_tiny_teacher, num_classes: 5}",
     "distill.teacher.num_classes=5 disagrees with the dataset's 9 classes"),
])
def test_errors_name_the_key_that_was_set(tmp_path: Path, capsys: pytest.CaptureFixture, override: str,
                                          expected: str):
    argv = ["train", str(_empty_config(tmp_path)), *tiny_overrides(tmp_path / "run", iters=2), override,
            "distill.allow_untrained_teacher=true"]
    if "teacher" in override:
        argv.append("distill.losses=[{name: kd}]")
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and not (tmp_path / "run").exists()
