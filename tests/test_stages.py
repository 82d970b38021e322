"""Multi-stage recipes: Knowledge Adaptation's auto-encoder stage and its distillation stage from one
config, run in order by one command, each stage with its own sections; a re-run reuses finished stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _engine_helpers import tiny_config, tiny_overrides
from segkd.config import ConfigError, load_config
from segkd.engine import train
from segkd.engine.checkpoint import load_checkpoint
from segkd.engine.stages import stage_configs

KA_STAGES = (
    "[{name: autoencoder, train: {stage: ka_autoencoder, iters: 2}, optim: {lr: 0.05},"
    " distill: {losses: []}}, {name: distill}]"
)
KA_TERMS = (
    "[{name: ka_adapt, weight: 50.0, options: {autoencoder: AUTOENCODER}},"
    " {name: ka_affinity, weight: 1.0, options: {autoencoder: AUTOENCODER}}]"
)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "t"
    run = train(tiny_config(out, iters=2, model__name="test_tiny_teacher"))
    return run / "checkpoints" / "latest.pt"


def _ka_config(out: Path, teacher: Path, **extra: object):
    overrides = tiny_overrides(out, iters=3, **extra) + [
        f"distill.teacher={{name: test_tiny_teacher, checkpoint: {teacher}}}",
        f"distill.losses={KA_TERMS}",
        f"stages={KA_STAGES}",
    ]
    return load_config(None, overrides)


def test_stage_configs_merge_sections_and_resolve_the_autoencoder(tmp_path: Path, teacher: Path):
    first, second = stage_configs(_ka_config(tmp_path / "ka", teacher))
    assert first.train.stage == "ka_autoencoder" and first.train.iters == 2 and first.optim.lr == 0.05
    assert first.distill.losses == [] and first.output_dir == str(tmp_path / "ka" / "autoencoder")
    assert second.train.stage == "main" and second.train.iters == 3 and second.optim.lr == 0.01
    ae = str(tmp_path / "ka" / "autoencoder" / "autoencoder.pt")
    assert [t.options["autoencoder"] for t in second.distill.losses] == [ae, ae]
    assert second.output_dir == str(tmp_path / "ka" / "distill") and not second.stages


def test_stage_errors_name_the_stage_before_anything_runs(tmp_path: Path, teacher: Path):
    bad = _ka_config(tmp_path / "bad", teacher)
    bad.stages[0].optim["lrr"] = 1.0
    with pytest.raises(ConfigError, match="stage 'autoencoder': unknown config key 'optim.lrr'"):
        train(bad)
    no_ae = _ka_config(tmp_path / "no_ae", teacher)
    no_ae.stages = no_ae.stages[1:]
    with pytest.raises(ConfigError, match="no earlier stage trains one"):
        train(no_ae)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "no_ae").exists()


def test_two_stage_recipe_runs_in_order_and_reuses_finished_stages(
    tmp_path: Path, teacher: Path, capsys: pytest.CaptureFixture
):
    last = train(_ka_config(tmp_path / "ka", teacher))
    assert last == tmp_path / "ka" / "distill"
    assert (tmp_path / "ka" / "autoencoder" / "autoencoder.pt").is_file()
    assert json.loads((last / "summary.json").read_text())["iters"] == 3
    stamp = (last / "checkpoints" / "latest.pt").stat().st_mtime_ns
    capsys.readouterr()
    again = train(_ka_config(tmp_path / "ka", teacher, train__resume="auto"))
    out = capsys.readouterr().out
    assert again == last and out.count("already finished") == 2
    assert (last / "checkpoints" / "latest.pt").stat().st_mtime_ns == stamp
    assert load_checkpoint(last / "checkpoints" / "latest.pt")["iteration"] == 3
