"""Predict, then train (issue 28): ``data.unlabeled.pseudo_labels`` trains the pool's images on a teacher
cache's arg-max labels as ordinary labels, with a plain step and no teacher; the demo's offline row."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from _engine_helpers import tiny_config
from segkd.cache import CacheMismatchError
from segkd.cache.pseudo_labels import argmax_label, pseudo_labelled_pool
from segkd.compare import BASELINE, MethodSpec
from segkd.data import build_dataset_from_config
from segkd.data.mixed import build_unlabeled_dataset
from segkd.demo.pipeline import OFFLINE, SETTINGS, demo_plan
from segkd.engine import builder, train
from segkd.engine.teacher_cache import cache_teacher

POOL = "{split: unlabeled, ratio: 0.5, options: {num_samples: 6}}"
TEACHER = {"distill__teacher": "{name: test_tiny_teacher, cache: CACHE}", "distill__losses": "[{name: kd}]",
           "distill__allow_untrained_teacher": "true"}


def test_the_label_is_the_argmax_of_the_bilinearly_upsampled_logits_by_hand():
    # Channel 0 = [0, 2], channel 1 = [1, 1] on a 1x2 grid, upsampled to 1x4 (align_corners=False): the
    # source columns are -0.25, 0.25, 0.75, 1.25 -> clamped 0, 0.25, 0.75, 1, so channel 0 reads
    # 0, 0.5, 1.5, 2 against channel 1's 1 everywhere: labels 1, 1, 0, 0.
    logits = torch.tensor([[[0.0, 2.0]], [[1.0, 1.0]]])
    assert argmax_label(logits, (1, 4)).tolist() == [[1, 1, 0, 0]]
    assert argmax_label(logits, (1, 4)).dtype == np.int64
    assert argmax_label(torch.ones(3, 2, 2), (2, 2)).tolist() == [[0, 0], [0, 0]]  # ties: the first class


def _cache(tmp_path: Path, **extra) -> tuple[Path, object]:
    """A float32 teacher cache of the tiny teacher on the 8 labelled + 6 pool images; its config."""
    cache = tmp_path / "cache"
    overrides = {**TEACHER, "distill__teacher": TEACHER["distill__teacher"].replace("CACHE", str(cache))}
    cfg = tiny_config(tmp_path / "writer", iters=2, data__batch_size=4, data__unlabeled=POOL, **overrides,
                      **extra)
    cache_teacher(cfg, codec="float32", progress=False)
    return cache, cfg


def _offline(tmp_path: Path, cache: Path, **extra):
    pool = POOL.replace("}}", f"}}, pseudo_labels: {cache}}}")
    return tiny_config(tmp_path / "offline", iters=3, data__batch_size=4, data__unlabeled=pool, **extra)


def test_pool_images_carry_the_teachers_labels_and_count_as_labelled(tmp_path: Path):
    cache, writer = _cache(tmp_path)
    cfg = _offline(tmp_path, cache)
    assert cfg.distill.teacher is None and not cfg.distill.losses  # a plain supervised run
    torch.manual_seed(writer.train.seed)
    builder.build_student(writer.model, 9)
    teacher = builder.build_teacher(writer, 9)  # the cache writer's teacher (same seed, same weights)
    names = list(build_dataset_from_config(cfg.data, "val", train=False).class_names)
    plain = build_unlabeled_dataset(cfg.data, names)
    pool = pseudo_labelled_pool(plain, cfg.data)
    merged = dataclasses.replace(cfg.data, options={**cfg.data.options, **cfg.data.unlabeled.options})
    evaluation = build_dataset_from_config(merged, "unlabeled", train=False)  # full images, no augmentation
    for index in range(len(pool)):
        image, truth, name = plain.load(index)
        with torch.no_grad():
            logits = teacher(evaluation[index]["image"][None]).logits[0]
        expected = argmax_label(logits, image.shape[:2])
        assert np.array_equal(pool.label(index, name, image.shape[:2]), expected)
        assert not np.array_equal(expected, truth)  # the teacher's labels, not the pool's own
    batch = next(builder.build_train_iterator(builder.build_data(cfg), cfg, 0))
    assert batch["labeled"].tolist() == [True] * 4  # 2 labelled + 2 pseudo-labelled, all count
    assert (batch["label"][2:] != 255).any()
    assert (train(cfg) / "checkpoints" / "latest.pt").is_file()


def test_a_pseudo_labelled_pool_is_refused_with_a_teacher_or_for_other_data(tmp_path: Path):
    cache, _ = _cache(tmp_path)
    with pytest.raises(ValueError, match="pseudo_labels.*without a teacher"):
        builder.build_data(_offline(tmp_path, cache, **{k: v.replace(", cache: CACHE", "")
                                                        for k, v in TEACHER.items()}))
    other = _offline(tmp_path, cache, data__options="{num_samples: 8, image_size: 32, max_objects: 3}")
    with pytest.raises(CacheMismatchError, match="data.options"):
        builder.build_train_iterator(builder.build_data(other), other, 0)
    smaller = _offline(tmp_path, cache)
    smaller.data.unlabeled.options = {"num_samples": 5}
    with pytest.raises(CacheMismatchError, match="holds 6 'unlabeled' images"):
        builder.build_train_iterator(builder.build_data(smaller), smaller, 0)


def test_the_demos_offline_row_trains_plain_steps_on_the_cache_labels(tmp_path: Path):
    plan = demo_plan(SETTINGS["default"], tmp_path / "demo", ["unlabeled", OFFLINE])
    offline = plan.methods[-1]
    assert offline.cached and offline.offline and plan.methods[0].key == BASELINE
    assert MethodSpec("x", offline.config, offline=True).cached  # an offline row always reads its cache
    writer = plan.run_config(offline, 0, "iters", "t.pt")  # no cache yet: the config that writes it
    assert writer.distill.teacher.checkpoint == "t.pt" and writer.data.unlabeled.pseudo_labels is None
    run = plan.run_config(offline, 0, "time", "t.pt", cache_seconds=3.0, student_step_s=0.01)
    assert run.distill.teacher is None and not run.distill.losses
    assert run.data.unlabeled.pseudo_labels == str(plan.cache_dir(offline))
    assert run.data.unlabeled.ratio == 0.875 and run.train.budget_precharge_s == pytest.approx(1.0)
