"""The built-in synthetic dataset: determinism, splits, speed, and classes not separable by colour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segkd.data import DATASETS, build_dataset
from segkd.data.synthetic import SYNTHETIC_CLASSES, SyntheticDataset


def test_registered_and_contract() -> None:
    ds = build_dataset("synthetic", None, "train", num_samples=5, image_size=48)
    assert "synthetic" in DATASETS
    assert len(ds) == 5 and ds.num_classes == len(SYNTHETIC_CLASSES) >= 8
    assert ds.palette.shape == (ds.num_classes, 3) and ds.palette.dtype == np.uint8
    assert ds.ignore_index == 255
    sample = ds[0]
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 48, 48)
    assert sample["label"].dtype == torch.int64 and sample["label"].shape == (48, 48)
    assert isinstance(sample["name"], str)
    assert -3 < float(sample["image"].mean()) < 3  # normalised, not 0..255


def test_deterministic_and_split_seeds_differ() -> None:
    a = build_dataset("synthetic", None, "train", num_samples=3, image_size=64, seed=7)
    b = build_dataset("synthetic", None, "train", num_samples=3, image_size=64, seed=7)
    val = build_dataset("synthetic", None, "val", num_samples=3, image_size=64, seed=7)
    other = build_dataset("synthetic", None, "train", num_samples=3, image_size=64, seed=8)
    for i in range(3):
        img, lbl, _ = a.load(i)
        img2, lbl2, _ = b.load(i)
        assert np.array_equal(img, img2) and np.array_equal(lbl, lbl2)
        assert not np.array_equal(img, val.load(i)[0])
        assert not np.array_equal(img, other.load(i)[0])
    assert not np.array_equal(a.load(0)[0], a.load(1)[0])


def test_rectangular_size_and_all_classes_present() -> None:
    ds = build_dataset("synthetic", None, "train", num_samples=20, image_size=[64, 96])
    counts = np.zeros(ds.num_classes, dtype=np.int64)
    for i in range(len(ds)):
        image, label, _ = ds.load(i)
        assert image.shape == (64, 96, 3) and image.dtype == np.uint8 and label.shape == (64, 96)
        counts += np.bincount(label.ravel(), minlength=ds.num_classes)
    assert (counts > 0).all()
    assert counts[0] / counts.sum() < 0.9  # objects cover a real share of the image


def test_colour_does_not_identify_the_class() -> None:
    """Every class's pixels share one colour distribution: per-class mean/std RGB match the background's."""
    # Each object has one flat colour, so the statistics average over objects: many small scenes are needed.
    ds = build_dataset("synthetic", None, "train", num_samples=1500, image_size=32, seed=3)
    sums = np.zeros((ds.num_classes, 3))
    squares = np.zeros((ds.num_classes, 3))
    counts = np.zeros(ds.num_classes)
    for i in range(len(ds)):
        image, label, _ = ds.load(i)
        pixels = image.reshape(-1, 3).astype(np.float64) / 255.0
        flat = label.ravel()
        np.add.at(sums, flat, pixels)
        np.add.at(squares, flat, pixels**2)
        counts += np.bincount(flat, minlength=ds.num_classes)
    mean = sums / counts[:, None]
    std = np.sqrt(squares / counts[:, None] - mean**2)
    assert np.abs(mean - mean[0]).max() < 0.06
    assert np.abs(std - std[0]).max() < 0.06


@pytest.mark.parametrize("bad", [{"image_size": 4}, {"num_samples": 0}])
def test_bad_options(bad: dict) -> None:
    with pytest.raises(ValueError, match="synthetic"):
        build_dataset("synthetic", None, "train", **bad)


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValueError, match="colour"):
        build_dataset("synthetic", None, "train", colour=3)


def test_cache_option_gives_the_same_samples_and_protects_them():
    plain = SyntheticDataset(split="train", num_samples=3, image_size=32)
    cached = SyntheticDataset(split="train", num_samples=3, image_size=32, cache=True)
    for i in range(3):
        a, b = plain.load(i), cached.load(i)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    image, label, _ = cached.load(1)
    image[:] = 0
    label[:] = 7  # a caller changing its copy must not change the cache
    again = cached.load(1)
    assert np.array_equal(again[0], plain.load(1)[0]) and np.array_equal(again[1], plain.load(1)[1])


def test_cache_generates_every_sample_when_built(monkeypatch: pytest.MonkeyPatch):
    """Nothing is generated during training (a time-matched comparison would charge it to the first run)."""
    cached = SyntheticDataset(split="train", num_samples=4, image_size=32, cache=True)

    def generate(self: SyntheticDataset, index: int) -> None:
        raise AssertionError(f"sample {index} generated after the dataset was built")

    monkeypatch.setattr(SyntheticDataset, "_generate", generate)
    assert [cached.load(i)[2] for i in range(4)] == [cached.load(i)[2] for i in range(4)]


def test_num_samples_per_split():
    counts = {"train": 5, "val": 9}
    assert len(SyntheticDataset(split="train", num_samples=counts, image_size=32)) == 5
    assert len(SyntheticDataset(split="val", num_samples=counts, image_size=32)) == 9
    assert len(SyntheticDataset(split="test", num_samples=counts, image_size=32)) == 200  # the default
