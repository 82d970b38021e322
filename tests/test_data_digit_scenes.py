"""The built-in ``digit_scenes`` dataset (handwritten digits from scikit-learn) and the synthetic
dataset's ``num_shapes`` / ``object_size`` options: determinism, classes, disjoint scans per split."""

from __future__ import annotations

import numpy as np
import pytest

from segkd.data import build_dataset
from segkd.data.digit_scenes import DIGIT_CLASSES, _scans


def test_digit_scenes_are_deterministic_and_labelled_by_digit():
    a = build_dataset("digit_scenes", None, "train", num_samples=4, image_size=64, seed=3)
    b = build_dataset("digit_scenes", None, "train", num_samples=4, image_size=64, seed=3, cache=True)
    assert a.class_names == DIGIT_CLASSES and a.num_classes == 11
    for i in range(4):
        (ia, la, na), (ib, lb, nb) = a.load(i), b.load(i)
        assert np.array_equal(ia, ib) and np.array_equal(la, lb) and na == nb
        assert ia.shape == (64, 64, 3) and ia.dtype == np.uint8
        assert set(np.unique(la)) <= set(range(11)) and (la > 0).any()
    other = build_dataset("digit_scenes", None, "train", num_samples=1, image_size=64, seed=4).load(0)[1]
    assert not np.array_equal(other, a.load(0)[1])


def test_val_scenes_draw_other_scans_than_training():
    scans, digits = _scans()
    train = build_dataset("digit_scenes", None, "train", num_samples=1, image_size=32)
    val = build_dataset("digit_scenes", None, "val", num_samples=1, image_size=32)
    for digit in range(10):
        seen = {s.tobytes() for s in train._pool[digit]}
        assert not seen & {s.tobytes() for s in val._pool[digit]}
        assert len(seen) + len(val._pool[digit]) == int((digits == digit).sum())


def test_fewer_classes_and_other_object_sizes():
    ds = build_dataset("digit_scenes", None, "train", num_samples=6, image_size=48, num_shapes=3)
    assert ds.class_names == DIGIT_CLASSES[:4]
    assert max(int(ds.load(i)[1].max()) for i in range(6)) <= 3
    shapes = build_dataset("synthetic", None, "train", num_samples=6, image_size=64, num_shapes=5,
                           object_size=[40, 60])
    assert shapes.num_classes == 6 and max(int(shapes.load(i)[1].max()) for i in range(6)) <= 5
    small = build_dataset("synthetic", None, "train", num_samples=6, image_size=64, object_size=[8, 10])
    big = build_dataset("synthetic", None, "train", num_samples=6, image_size=64, object_size=[60, 70])
    area = [sum(int((d.load(i)[1] > 0).sum()) for i in range(6)) for d in (small, big)]
    assert area[0] * 5 < area[1]
    with pytest.raises(ValueError, match="num_shapes must be in 1..8"):
        build_dataset("synthetic", None, "train", num_samples=1, num_shapes=9)
    with pytest.raises(ValueError, match="object_size"):
        build_dataset("synthetic", None, "train", num_samples=1, object_size=[5])
