"""Options that make the recipes exact to the reference training scripts (issue 27): the LR floor of DIST's
poly decay (``optim.min_lr``), the discrete random-scale grid of CIRKD / DIST / SKD (``data.scale_step``),
a stage's own ``data`` section (Knowledge Adaptation stage 1's batch size) and the loss defaults that follow
the reference code (``dist`` aux term 0.4, ``ka_affinity`` torchdistill's definition)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from _engine_helpers import tiny_overrides
from segkd.config import load_config
from segkd.data.transforms import draw_scale
from segkd.engine.stages import stage_configs
from segkd.schedule import build_poly_scheduler, poly_factor


def test_poly_with_an_lr_floor_is_dists_schedule():
    # DIST segmentation/train_kd.py:218: lr = 1e-4 + (0.02 - 1e-4) * (1 - i / max) ** 0.9
    floor = 1e-4 / 0.02
    assert poly_factor(0, 100, floor=floor) == pytest.approx(1.0)
    assert 0.02 * poly_factor(50, 100, floor=floor) == pytest.approx(1e-4 + 0.0199 * 0.5**0.9, rel=1e-12)
    assert 0.02 * poly_factor(100, 100, floor=floor) == pytest.approx(1e-4, rel=1e-12)
    assert poly_factor(50, 100) == pytest.approx(0.5**0.9)  # no floor: plain poly as before


def test_min_lr_reaches_the_optimizer_through_the_config(tmp_path: Path):
    from segkd.engine import builder
    from segkd.engine.optim import STUDENT, build_optimizers

    cfg = load_config(None, tiny_overrides(tmp_path / "r", iters=10, optim__lr=0.02, optim__min_lr=1e-4))
    student = builder.build_student(cfg.model, 3)
    distiller = builder.build_distiller(cfg, student, None, 3)
    role = build_optimizers(distiller, cfg)[STUDENT]
    for _ in range(10):
        role.optimizer.step()
        role.scheduler.step()
    assert role.scheduler.get_last_lr()[0] == pytest.approx(1e-4, rel=1e-9)


def test_an_lr_floor_at_or_above_the_lr_is_refused():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    with pytest.raises(ValueError, match="optim.min_lr"):
        build_poly_scheduler(opt, 10, floor=1.0)


def test_scale_step_draws_the_reference_grid():
    # CIRKD dataset/cityscapes.py:52: f_scale = 0.5 + random.randint(0, 15) / 10 -> 16 values 0.5 .. 2.0
    torch.manual_seed(0)
    drawn = {round(draw_scale((0.5, 2.0), 0.1), 9) for _ in range(2000)}
    assert drawn == {round(0.5 + k / 10, 9) for k in range(16)}
    # official SKD dataset/datasets.py:158: 0.7 + random.randint(0, 14) / 10 -> 15 values 0.7 .. 2.1
    drawn = {round(draw_scale((0.7, 2.1), 0.1), 9) for _ in range(2000)}
    assert drawn == {round(0.7 + k / 10, 9) for k in range(15)}
    continuous = [draw_scale((0.5, 2.0)) for _ in range(50)]  # step 0: uniform, as before
    assert len(set(continuous)) == 50 and all(0.5 <= s <= 2.0 for s in continuous)


def test_a_stage_sets_its_own_data_section(tmp_path: Path):
    stages = ("[{name: autoencoder, data: {batch_size: 4}, train: {stage: ka_autoencoder, iters: 2}, "
              "distill: {losses: []}}, {name: distill}]")
    cfg = load_config(None, tiny_overrides(tmp_path / "ka") + [
        "distill.teacher={name: test_tiny_teacher, checkpoint: t.pt}", f"stages={stages}"])
    first, second = stage_configs(cfg)
    assert first.data.batch_size == 4 and second.data.batch_size == 2


def test_loss_defaults_follow_the_reference_code():
    from segkd.losses.dist import DIST
    from segkd.losses.ka import KAAffinity

    # DIST segmentation/train_kd.py:258 adds 0.4 x DIST on the aux logits
    assert inspect.signature(DIST).parameters["aux_weight"].default == 0.4
    # the one public implementation of the affinity term: torchdistill's AffinityLoss
    assert inspect.signature(KAAffinity).parameters["definition"].default == "torchdistill"
