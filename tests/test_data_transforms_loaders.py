"""Transforms (crop, flip consistency, ignore padding, nearest labels) and the train/val loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segkd.config_schema import DataConfig, InputConfig
from segkd.data import (
    EvalTransform,
    TrainTransform,
    build_dataset_from_config,
    build_train_loader,
    build_transforms,
    build_val_loader,
)
from segkd.data.loaders import InfiniteSampler, ShardSampler, pad_collate


def _pair(h: int = 20, w: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Image whose red channel encodes the column and label = column index (so flips are checkable)."""
    cols = np.tile(np.arange(w), (h, 1))
    image = np.stack([cols * 8 % 256, np.zeros_like(cols), np.full_like(cols, 100)], -1).astype(np.uint8)
    return image, cols.astype(np.int64)


def test_train_transform_crop_size_and_types() -> None:
    image, label = _pair(40, 60)
    torch.manual_seed(0)
    for _ in range(10):
        img, lbl = TrainTransform(crop_size=(24, 32))(image, label)
        assert img.shape == (3, 24, 32) and img.dtype == torch.float32
        assert lbl.shape == (24, 32) and lbl.dtype == torch.int64


def test_flip_keeps_image_and_label_aligned() -> None:
    image, label = _pair(16, 32)
    plain = InputConfig(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    t = TrainTransform(crop_size=(16, 32), scale_range=(1.0, 1.0), flip=True, convention=plain)
    flipped = 0
    for seed in range(12):
        torch.manual_seed(seed)
        img, lbl = t(image, label)
        red_col = torch.round(img[0] * 255 / 8).long()  # red channel recovers the column index
        assert torch.equal(red_col, lbl)
        flipped += int(lbl[0, 0] == 31)
    assert 0 < flipped < 12  # both orientations occur


def test_small_image_is_padded_with_ignore() -> None:
    image, label = _pair(10, 12)
    t = TrainTransform(crop_size=(32, 32), scale_range=(1.0, 1.0), flip=False)
    img, lbl = t(image, label)
    assert lbl.shape == (32, 32)
    assert (lbl[10:, :] == 255).all() and (lbl[:, 12:] == 255).all()
    assert torch.equal(lbl[:10, :12], torch.from_numpy(label))
    assert (img[:, 10:, :] == 0).all()  # pad value 0 = the mean colour after normalisation


def test_scaling_uses_nearest_for_labels() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    label = rng.choice(np.array([0, 3, 7, 255]), size=(33, 47))
    t = TrainTransform(crop_size=(20, 20), scale_range=(0.7, 1.9))
    for seed in range(5):
        torch.manual_seed(seed)
        _, lbl = t(image, label)
        assert set(lbl.unique().tolist()) <= {0, 3, 7, 255}


def test_jitter_changes_colours_only() -> None:
    image, label = _pair(16, 16)
    torch.manual_seed(0)
    a_img, a_lbl = TrainTransform((16, 16), (1.0, 1.0), flip=False, jitter=0.5)(image, label)
    b_img, b_lbl = TrainTransform((16, 16), (1.0, 1.0), flip=False, jitter=0.0)(image, label)
    assert torch.equal(a_lbl, b_lbl) and not torch.allclose(a_img, b_img)


def test_eval_transform_full_size_and_normalised() -> None:
    image, label = _pair(21, 33)
    img, lbl = EvalTransform()(image, label)
    assert img.shape == (3, 21, 33) and torch.equal(lbl, torch.from_numpy(label))
    expected = (100 / 255 - 0.406) / 0.225
    assert torch.allclose(img[2], torch.full((21, 33), expected), atol=1e-5)


def test_bad_transform_config() -> None:
    with pytest.raises(ValueError, match="crop_size"):
        build_transforms(DataConfig(crop_size=[0, 8]), train=True)
    with pytest.raises(ValueError, match="scale_range"):
        build_transforms(DataConfig(scale_range=[2.0, 1.0]), train=True)


# ------------------------------------------------------------------------------------------------- loaders
def _cfg(**kw) -> DataConfig:
    base = dict(options={"num_samples": 6, "image_size": 48}, crop_size=[32, 32], batch_size=4, workers=0)
    base.update(kw)
    return DataConfig(**base)


def test_build_dataset_from_config_train_and_val() -> None:
    cfg = _cfg()
    train = build_dataset_from_config(cfg, "train", train=True)
    val = build_dataset_from_config(cfg, "val", train=False)
    assert train[0]["image"].shape == (3, 32, 32)
    assert val[0]["image"].shape == (3, 48, 48)  # full size


def test_train_loader_deterministic_repeats_and_keeps_global_rng() -> None:
    cfg = _cfg()
    ds = build_dataset_from_config(cfg, "train", train=True)
    state = torch.get_rng_state()
    a = list(build_train_loader(ds, cfg, seed=3, total_samples=10))
    assert torch.equal(state, torch.get_rng_state())
    b = list(build_train_loader(ds, cfg, seed=3, total_samples=10))
    c = list(build_train_loader(ds, cfg, seed=4, total_samples=10))
    assert len(a) == 3 and a[0]["image"].shape == (4, 3, 32, 32) and a[0]["label"].shape == (4, 32, 32)
    for x, y in zip(a, b):
        assert (
            x["name"] == y["name"]
            and torch.equal(x["image"], y["image"])
            and torch.equal(x["label"], y["label"])
        )
    assert any(not torch.equal(x["image"], y["image"]) for x, y in zip(a, c))
    names = [n for batch in a for n in batch["name"]]
    assert len(names) == 12 and set(names) == {f"train_{i:06d}" for i in range(6)}  # 6 samples repeated
    assert sorted(names[:6]) == sorted(set(names))  # each epoch is a permutation


def test_train_loader_same_with_workers() -> None:
    cfg = _cfg(workers=2)
    ds = build_dataset_from_config(cfg, "train", train=True)
    with_workers = list(build_train_loader(ds, cfg, seed=5, total_samples=8))
    without = list(build_train_loader(ds, _cfg(), seed=5, total_samples=8))
    for x, y in zip(with_workers, without):
        assert x["name"] == y["name"] and torch.equal(x["label"], y["label"])
        assert torch.allclose(x["image"], y["image"], atol=1e-4)


def test_train_loader_resume_and_endless() -> None:
    cfg = _cfg()
    ds = build_dataset_from_config(cfg, "train", train=True)
    full = list(build_train_loader(ds, cfg, seed=1, total_samples=12))
    resumed = list(build_train_loader(ds, cfg, seed=1, total_samples=4, start_batch=2))
    assert torch.equal(full[2]["image"], resumed[0]["image"])
    endless = iter(build_train_loader(ds, cfg, seed=1))
    assert all(next(endless)["image"].shape[0] == 4 for _ in range(4))  # beyond one epoch of 6


def test_ranks_split_the_stream_disjointly() -> None:
    n, world = 10, 3
    shares = [
        list(InfiniteSampler(n, seed=0, rank=r, world_size=world, num_samples=10)) for r in range(world)
    ]
    single = list(InfiniteSampler(n, seed=0, num_samples=30))
    interleaved = [shares[p % world][p // world] for p in range(30)]
    assert interleaved == single  # ranks share one global stream, no overlap
    first_epoch = [idx for idx, _ in single[:n]]
    assert sorted(first_epoch) == list(range(n))


def test_val_loader_each_sample_once_across_ranks() -> None:
    indices = [i for r in range(3) for i in ShardSampler(10, r, 3)]
    assert sorted(indices) == list(range(10))
    cfg = _cfg(val_batch_size=2)
    val = build_dataset_from_config(cfg, "val", train=False)
    batches = list(build_val_loader(val, cfg))
    assert [n for b in batches for n in b["name"]] == [f"val_{i:06d}" for i in range(6)]
    assert batches[0]["image"].shape == (2, 3, 48, 48)


def test_pad_collate_mixed_sizes() -> None:
    samples = [
        {"image": torch.ones(3, 4, 5), "label": torch.zeros(4, 5, dtype=torch.long), "name": "a"},
        {"image": torch.ones(3, 6, 3), "label": torch.ones(6, 3, dtype=torch.long), "name": "b"},
    ]
    batch = pad_collate(samples)
    assert batch["image"].shape == (2, 3, 6, 5) and batch["name"] == ["a", "b"]
    assert (batch["label"][0, 4:] == 255).all() and (batch["label"][1, :, 3:] == 255).all()
