"""segkd predict on folders with corrupt / non-image files, and same-named files in different sub-folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.test_export import make_checkpoint

from segkd.cli import main
from segkd.export.predict import collect_images


def _image(path: Path, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    _image(root / "a" / "x.png", (20, 28), 0)
    _image(root / "b" / "x.png", (24, 16), 1)
    _image(root / "good.jpg", (18, 18), 2)
    _image(root / "truncated.png", (40, 40), 3)
    data = (root / "truncated.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "text.png").write_text("this is not a PNG")  # a non-image file with an image suffix
    (root / "empty.jpg").write_bytes(b"")
    return root


def test_corrupt_files_are_skipped_others_written_exit_one(tmp_path: Path, folder: Path, capsys):
    ckpt, _ = make_checkpoint(tmp_path / "s.pt")
    out = tmp_path / "out"
    code = main(["predict", str(ckpt), str(folder), "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    written = sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.png"))
    assert written == ["a/x.png", "b/x.png", "good.png"]
    assert Image.open(out / "labels" / "a" / "x.png").size == (28, 20)
    assert Image.open(out / "labels" / "b" / "x.png").size == (16, 24)  # not overwritten by a/x.png
    assert sorted(p.name for p in (out / "overlays").rglob("*.png")) == ["good.png", "x.png", "x.png"]
    assert "wrote 3 label PNGs" in captured.out
    for bad in ("truncated.png", "text.png", "empty.jpg"):
        assert f"warning: skipping {folder / bad}" in captured.err
        assert f"  - {folder / bad}" in captured.err
    assert "skipped 3 of 6 file(s)" in captured.err and "Traceback" not in captured.err


def test_all_good_folder_exits_zero(tmp_path: Path):
    ckpt, _ = make_checkpoint(tmp_path / "s.pt")
    _image(tmp_path / "ok" / "y.png", (12, 12), 4)
    args = ["predict", str(ckpt), str(tmp_path / "ok"), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(args) == 0
    assert (tmp_path / "o" / "labels" / "y.png").is_file()


def test_output_name_clash_is_refused_before_predicting(tmp_path: Path, capsys):
    _image(tmp_path / "p" / "x.png", (8, 8), 5)
    _image(tmp_path / "p" / "x.jpg", (8, 8), 6)
    with pytest.raises(ValueError, match=r"p/x\.jpg and .*p/x\.png would both be written as labels/x\.png"):
        collect_images([tmp_path / "p"])
    ckpt, _ = make_checkpoint(tmp_path / "s.pt")
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(tmp_path / "p"), "--out", str(out), "--no-progress"]) == 2
    assert "would both be written" in capsys.readouterr().err and not out.exists()


def test_direct_files_keep_their_names(tmp_path: Path):
    _image(tmp_path / "c" / "z.png", (8, 8), 7)
    found = collect_images([tmp_path / "c" / "z.png", tmp_path / "c"])  # same file twice: no clash
    assert [(i.path.name, i.name.as_posix()) for i in found] == [("z.png", "z.png"), ("z.png", "z.png")]
