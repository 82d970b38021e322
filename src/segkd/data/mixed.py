"""Training batches that mix labelled images with unlabelled ones (``data.unlabeled``).

Each per-process batch of ``B = data.batch_size`` holds ``B_u = floor(ratio * B)`` unlabelled images
(always fewer than B, since ``ratio < 1``, so every batch has a labelled image) after
``B_l = B - B_u`` labelled ones, and a boolean ``labeled`` (B,) says which is which. Unlabelled samples
go through the same training transform; their labels are ``IGNORE_INDEX`` everywhere, whatever their
source holds (a ``split`` of a labelled dataset keeps its labels on disk: they are overwritten here),
unless the pool is pseudo-labelled (``data.unlabeled.pseudo_labels``: the teacher's labels from a cache,
:mod:`segkd.cache.pseudo_labels`), in which case its samples keep them and count as labelled.

Determinism, resume and DDP as in :mod:`segkd.data.loaders`: the labelled images are the stream of an
:class:`InfiniteSampler` with the run seed, ``B_l`` positions per batch; the unlabelled images are a
second, independent stream with a seed derived from the run seed, ``B_u`` positions per batch. Batch
``b`` of rank ``r`` is thus a pure function of (seed, b, r, world size): a run resumed at batch ``k``
sees exactly the batches an uninterrupted run sees from ``k``, every rank draws a disjoint share of each
stream, and each sample's augmentation is seeded on its own, so workers do not change the batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from segkd.config_schema import DataConfig, InputConfig, UnlabeledConfig
from segkd.data.base import SegDataset
from segkd.data.loaders import InfiniteSampler, _mix, _worker_init, dist_info, seeded_sample
from segkd.labels import IGNORE_INDEX

UNLABELED_STREAM = 2  # salt of the unlabelled stream's seed (the labelled stream uses the run seed itself)


def unlabeled_count(ratio: float, batch_size: int) -> int:
    """``floor(ratio * batch_size)``: unlabelled images per per-process batch (< batch_size for ratio < 1)."""
    return int(ratio * batch_size + 1e-9)  # 0.29 * 100 = 28.999999999999996 counts as 29


def check_unlabeled(cfg: DataConfig, has_teacher: bool) -> UnlabeledConfig | None:
    """``cfg.unlabeled`` when it is set and usable (None when off); a clear one-line error otherwise."""
    unlabeled = cfg.unlabeled
    if unlabeled is None:
        return None
    if (unlabeled.split is None) == (unlabeled.root is None):
        raise ValueError(
            "config key 'data.unlabeled': set split (a split of data.name whose labels are ignored) or "
            "root (a folder of images), exactly one"
        )
    if unlabeled.pseudo_labels is not None:
        if has_teacher:
            raise ValueError(
                "config key 'data.unlabeled.pseudo_labels' trains on a cache's labels without a teacher "
                "(predict, then train); remove the distill section, or remove pseudo_labels to distil live"
            )
    elif not has_teacher:
        raise ValueError(
            "config key 'data.unlabeled' needs distill.teacher: without a teacher nothing provides targets "
            "for unlabelled images (remove data.unlabeled for plain supervised training)"
        )
    if unlabeled.ratio > 0 and unlabeled_count(unlabeled.ratio, cfg.batch_size) == 0:
        raise ValueError(
            f"config key 'data.unlabeled.ratio': {unlabeled.ratio} of data.batch_size {cfg.batch_size} is "
            f"less than one image per batch (floor(ratio * batch_size) = 0); raise it to at least "
            f"{1 / cfg.batch_size:g}"
        )
    return unlabeled


def build_unlabeled_dataset(
    cfg: DataConfig, class_names: list[str], convention: InputConfig | None = None
) -> SegDataset:
    """The unlabelled pool of ``cfg.unlabeled`` with the training transform (its labels are ignored), in the
    student's input ``convention``."""
    from segkd.data.factory import build_dataset_from_config
    from segkd.data.images import ImageFolder
    from segkd.data.transforms import build_transforms

    unlabeled = cfg.unlabeled
    assert unlabeled is not None
    if unlabeled.root is not None:
        transform = build_transforms(cfg, train=True, convention=convention)
        return ImageFolder(unlabeled.root, class_names, transform)
    assert unlabeled.split is not None
    merged = replace(cfg, options={**cfg.options, **unlabeled.options})
    return build_dataset_from_config(merged, unlabeled.split, train=True, convention=convention)


class MixedBatchSampler(Sampler):
    """Yields batches ``[(is_labelled, index, augmentation seed), ...]``: ``n_labeled`` items of the
    labelled stream, then ``n_unlabeled`` of the unlabelled one (see the module docstring).

    ``num_batches`` batches (None: forever), starting at batch ``start_batch`` of this rank's streams.
    """

    def __init__(
        self,
        labeled_len: int,
        unlabeled_len: int,
        n_labeled: int,
        n_unlabeled: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_batches: int | None = None,
        start_batch: int = 0,
    ) -> None:
        if n_labeled < 1 or n_unlabeled < 1:
            raise ValueError(
                f"a mixed batch needs labelled and unlabelled images, got {n_labeled}+{n_unlabeled}"
            )
        self.labeled = InfiniteSampler(labeled_len, seed, rank, world_size, start=start_batch * n_labeled)
        self.unlabeled = InfiniteSampler(
            unlabeled_len,
            _mix(int(seed), UNLABELED_STREAM),
            rank,
            world_size,
            start=start_batch * n_unlabeled,
        )
        self.n_labeled, self.n_unlabeled, self.num_batches = n_labeled, n_unlabeled, num_batches

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("an endless sampler has no length")
        return self.num_batches

    def __iter__(self) -> Iterator[list[tuple[bool, int, int]]]:
        labeled, unlabeled = iter(self.labeled), iter(self.unlabeled)
        count = 0
        while self.num_batches is None or count < self.num_batches:
            batch = [(True, *next(labeled)) for _ in range(self.n_labeled)]
            batch += [(False, *next(unlabeled)) for _ in range(self.n_unlabeled)]
            yield batch
            count += 1


class _MixedSamples(Dataset):
    """Item ``(is_labelled, index, seed)``: sample ``index`` of the labelled or unlabelled dataset, loaded
    by :func:`~segkd.data.loaders.seeded_sample` (``skip_bad`` replaces an unreadable pair by the next one
    of the same dataset); an unlabelled sample's label is set to ``IGNORE_INDEX`` unless ``pool_labelled``
    (a pseudo-labelled pool, whose samples then count as labelled)."""

    def __init__(
        self, labeled: Dataset, unlabeled: Dataset, skip_bad: bool = False, pool_labelled: bool = False
    ) -> None:
        self.labeled, self.unlabeled, self.skip_bad = labeled, unlabeled, skip_bad
        self.pool_labelled = pool_labelled

    def __getitem__(self, item: tuple[bool, int, int]) -> dict[str, Any]:
        is_labeled, index, seed = item
        sample = seeded_sample(self.labeled if is_labeled else self.unlabeled, index, seed, self.skip_bad)
        if self.pool_labelled:
            return {**sample, "labeled": True}
        if not is_labeled:
            sample = {**sample, "label": torch.full_like(sample["label"], IGNORE_INDEX)}
        return {**sample, "labeled": is_labeled}


def build_mixed_train_loader(
    labeled: Dataset,
    unlabeled: Dataset,
    cfg: DataConfig,
    seed: int,
    total_samples: int | None = None,
    start_batch: int = 0,
) -> DataLoader:
    """Like :func:`segkd.data.loaders.build_train_loader` (same arguments, per-process batches of
    ``cfg.batch_size``), each batch mixed as in the module docstring; batches carry ``labeled`` (B,)."""
    assert cfg.unlabeled is not None
    n_unlabeled = unlabeled_count(cfg.unlabeled.ratio, cfg.batch_size)
    rank, world = dist_info()
    batches = None if total_samples is None else -(-int(total_samples) // cfg.batch_size)
    sampler = MixedBatchSampler(
        len(labeled),  # type: ignore[arg-type]
        len(unlabeled),  # type: ignore[arg-type]
        cfg.batch_size - n_unlabeled,
        n_unlabeled,
        seed,
        rank,
        world,
        num_batches=batches,
        start_batch=start_batch,
    )
    return DataLoader(
        _MixedSamples(labeled, unlabeled, cfg.skip_bad, cfg.unlabeled.pseudo_labels is not None),
        batch_sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(int(seed)),  # keeps the global RNG untouched
        persistent_workers=cfg.workers > 0 and batches is None,
    )
