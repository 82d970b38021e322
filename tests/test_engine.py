"""Engine end to end on CPU: train -> checkpoint -> resume -> eval, exact resume, NaN stop, atomic saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _engine_helpers import tiny_config, tiny_overrides
from segkd.cli import main as cli_main
from segkd.engine import evaluate, train
from segkd.engine.checkpoint import load_checkpoint, save_checkpoint
from segkd.engine.distiller import NonFiniteLossError
from segkd.engine.trainer import Trainer
from segkd.losses.base import LOSSES, DistillLoss
from segkd.schedule import poly_factor

CKPT_KEYS = {"model", "losses", "optimizer", "scheduler", "adversary", "iteration", "rng", "config", "meta"}


def test_train_checkpoint_eval_end_to_end(tmp_path: Path):
    run = train(tiny_config(tmp_path / "run", iters=4, train__val_interval=2))
    latest = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert set(latest) >= CKPT_KEYS and latest["iteration"] == 4
    assert latest["meta"]["num_classes"] == 9 and len(latest["meta"]["palette"]) == 9
    assert (run / "checkpoints" / "best.pt").is_file()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train_rows = [r for r in log if "split" not in r]
    assert [r["iter"] for r in train_rows] == [1, 2, 3, 4]
    assert {"lr", "ce", "aux_ce", "total"} <= set(train_rows[0])
    assert list((run / "tb").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "baseline" and summary["iters"] == 4 and summary["params"] > 0
    for name in ("metrics.json", "metrics.txt", "per_class_iou.png", "predictions.png"):
        assert (run / "eval" / name).is_file()
    metrics = evaluate(tiny_config(tmp_path / "run"), run / "checkpoints" / "best.pt")
    assert 0.0 <= metrics["miou"] <= 100.0 and len(metrics["per_class_iou"]) == 9
    best = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(summary["miou"]) and best["miou"] == pytest.approx(
        metrics["miou"]
    )


def test_resume_gives_identical_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two separate runs with one seed (one cut and resumed) end with bit-identical weights on CPU."""
    common = dict(iters=6, train__ckpt_interval=3, data__options="{num_samples: 8, image_size: 40}")
    full = train(tiny_config(tmp_path / "full", **common))

    original = Trainer.train_step

    def crash_after_four(self: Trainer) -> dict:
        if self.iteration == 4:
            raise KeyboardInterrupt  # killed after iteration 4; only the iteration-3 checkpoint survives
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", crash_after_four)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "cut", **common))
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "latest.pt")["iteration"] == 3
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = train(tiny_config(tmp_path / "cut", train__resume="auto", **common))

    a = load_checkpoint(full / "checkpoints" / "latest.pt")
    b = load_checkpoint(resumed / "checkpoints" / "latest.pt")
    assert a["iteration"] == b["iteration"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert b["scheduler"]["last_epoch"] == 6


class _NaNAfter(DistillLoss):
    """Test term: a small finite value for the first ``after`` calls, NaN afterwards."""

    def __init__(self, spec, after: int = 2) -> None:
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, student, teacher, batch):
        self.calls += 1
        value = student.logits.mean() * 0
        return value + float("nan") if self.calls > self.after else value


if "test_nan_after" not in LOSSES:
    LOSSES.add("test_nan_after", _NaNAfter)


def test_nan_loss_stops_naming_term_and_keeps_last_good_checkpoint(tmp_path: Path):
    cfg = tiny_config(
        tmp_path / "nan",
        iters=6,
        train__ckpt_interval=2,
        distill__teacher__name="test_tiny_teacher",
        distill__allow_untrained_teacher="true",
        distill__losses="[{name: test_nan_after, weight: 1.0, options: {after: 3}}]",
    )
    with pytest.raises(NonFiniteLossError, match=r"'test_nan_after' is nan at iteration 3"):
        train(cfg)
    kept = load_checkpoint(tmp_path / "nan" / "checkpoints" / "latest.pt")
    assert kept["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_cli_nan_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture):
    args = tiny_overrides(tmp_path / "cli", iters=3) + [
        "distill.teacher.name=test_tiny_teacher",
        "distill.allow_untrained_teacher=true",
        "distill.losses=[{name: test_nan_after, options: {after: 0}}]",
    ]
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    assert cli_main(["train", str(config), *args]) == 3
    assert "test_nan_after" in capsys.readouterr().err


def test_save_checkpoint_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "ckpt" / "latest.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "iteration": 1}, path)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "iteration": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["latest.pt"]  # no temp file left behind


def test_poly_schedule_with_warmup():
    assert poly_factor(0, 100) == 1.0
    assert poly_factor(50, 100, power=0.9) == pytest.approx(0.5**0.9)
    assert poly_factor(100, 100) == 0.0
    assert poly_factor(0, 100, warmup_iters=10, warmup_ratio=0.1) == pytest.approx(0.1)
    assert poly_factor(5, 100, warmup_iters=10, warmup_ratio=0.1) == pytest.approx(0.55 * 0.95**0.9)
    assert poly_factor(10, 100, warmup_iters=10) == pytest.approx(0.9**0.9)


def test_eval_cli_accepts_bare_checkpoint(tmp_path: Path):
    run = train(tiny_config(tmp_path / "run", iters=1))
    config = tmp_path / "run" / "config.yaml"
    out = tmp_path / "evalout"
    code = cli_main(
        [
            "eval",
            str(config),
            f"checkpoint={run / 'checkpoints' / 'latest.pt'}",
            f"output_dir={out}",
            "eval.mode=slide",
            "eval.crop_size=[24,24]",
            "eval.stride=[16,16]",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "evals" / "latest_slide" / "metrics.json").read_text())
    assert metrics["mode"] == "slide" and metrics["checkpoint"].endswith("latest.pt")


def test_eval_never_replaces_training_evaluation_or_an_earlier_eval(tmp_path: Path):
    run = train(tiny_config(tmp_path / "run", iters=1))
    kept = {p: p.read_bytes() for p in [run / "summary.json", *sorted((run / "eval").iterdir())]}
    base = ["eval", str(run / "config.yaml"), f"checkpoint={run / 'checkpoints' / 'best.pt'}"]
    assert cli_main([*base, "eval.mode=multiscale", "eval.scales=[0.5,1.0]", "eval.flip=true"]) == 0
    assert cli_main([*base, "eval.mode=multiscale", "eval.scales=[0.5,1.0]", "eval.flip=true"]) == 0
    assert cli_main(base) == 0
    evals = sorted(p.name for p in (run / "evals").iterdir())
    assert evals == ["best_multiscale_0.5-1_flip", "best_multiscale_0.5-1_flip-2", "best_whole"]
    assert json.loads((run / "evals" / "best_whole" / "metrics.json").read_text())["mode"] == "whole"
    assert {p: p.read_bytes() for p in kept} == kept


def test_distilled_resume_restores_discriminator_queues_and_projector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Cut-and-resumed distillation (adversary + memory queues + projector) equals an uninterrupted run."""
    teacher_run = train(tiny_config(tmp_path / "teacher", iters=2, model__name="test_tiny_teacher"))
    losses = (
        "[{name: kd}, {name: skd_holistic, weight: 0.001, options: {conv_dim: 4}},"
        " {name: cirkd_memory_p2p, weight: 0.1, options: {pixel_memory_size: 20, region_memory_size: 4,"
        " pixel_contrast_size: 12, region_contrast_size: 6}}, {name: cirkd_memory_p2r, weight: 0.1}]"
    )
    common = dict(
        iters=6,
        train__ckpt_interval=3,
        distill__teacher=f"{{name: test_tiny_teacher, checkpoint: {teacher_run}/checkpoints/latest.pt}}",
        distill__losses=losses,
    )
    full = train(tiny_config(tmp_path / "full", **common))
    original = Trainer.train_step

    def crash_after_four(self: Trainer) -> dict:
        if self.iteration == 4:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", crash_after_four)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "cut", **common))
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = train(tiny_config(tmp_path / "cut", train__resume="auto", **common))

    a = load_checkpoint(full / "checkpoints" / "latest.pt")
    b = load_checkpoint(resumed / "checkpoints" / "latest.pt")
    for part in ("model", "losses", "shared"):
        flat_a, flat_b = _flatten(a[part]), _flatten(b[part])
        assert flat_a.keys() == flat_b.keys()
        for key, value in flat_a.items():
            assert torch.equal(value, flat_b[key]), f"{part}.{key}"
    shared = _flatten(a["shared"])  # the distiller's named shared modules: CIRKD's projector and queues
    assert any(k.startswith("cirkd_memory.pixel_queue") for k in shared)
    assert any(k.startswith("cirkd_memory.projector") for k in shared)
    assert any("discriminator" in key for key in _flatten(a["losses"]))
    assert a["adversary"] and _flatten(a["adversary"]).keys() == _flatten(b["adversary"]).keys()
    for key, value in _flatten(a["adversary"]).items():
        assert torch.equal(value, _flatten(b["adversary"])[key]), key


def _flatten(tree: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a nested dict/list, keyed by their dotted path."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    out: dict[str, torch.Tensor] = {}
    for key, value in items:
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


class _TwoValues(DistillLoss):
    """Test term returning two named values computed together: mean and squared mean of the logits."""

    def __init__(self, spec) -> None:
        super().__init__()

    def forward(self, student, teacher, batch):
        mean = student.logits.mean()
        return {"mean": mean, "square": mean**2}


if "test_two_values" not in LOSSES:
    LOSSES.add("test_two_values", _TwoValues)


def test_a_term_may_return_several_named_values_each_weighted_by_the_term(tmp_path: Path):
    from segkd.engine import builder

    cfg = tiny_config(tmp_path / "run", iters=1, distill__teacher="{name: test_tiny_teacher}",
                      distill__allow_untrained_teacher="true",
                      distill__losses="[{name: test_two_values, weight: 3.0}]")
    data = builder.build_data(cfg)
    student = builder.build_student(cfg.model, data.num_classes)
    teacher = builder.build_teacher(cfg, data.num_classes, data.class_names)
    distiller = builder.build_distiller(cfg, student, teacher, data.num_classes).train()
    batch = next(builder.build_train_iterator(data, cfg, 0))
    result = distiller.compute(batch["image"], batch["label"])
    terms = result.terms
    assert set(terms) == {"ce", "aux_ce", "test_two_values.mean", "test_two_values.square"}
    mean = terms["test_two_values.mean"]
    assert terms["test_two_values.square"].item() == pytest.approx(mean.item() ** 2)
    expected = terms["ce"] + 0.4 * terms["aux_ce"] + 3.0 * (mean + mean**2)
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-6)
    logged = train(tiny_config(tmp_path / "logged", iters=1, distill__teacher="{name: test_tiny_teacher}",
                               distill__allow_untrained_teacher="true",
                               distill__losses="[{name: test_two_values, weight: 3.0}]"))
    first = json.loads((logged / "log.jsonl").read_text().splitlines()[0])
    assert {"test_two_values.mean", "test_two_values.square"} <= set(first)
