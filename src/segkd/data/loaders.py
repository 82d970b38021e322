"""Iteration-based, DDP-aware, deterministic data loaders.

Training draws from one global stream of sample positions ``p = 0, 1, 2, ...``: position ``p`` belongs to
epoch ``p // N`` (a fresh permutation of the ``N`` samples seeded by ``(seed, epoch)``) and gets its own
augmentation seed derived from ``(seed, p)``. Rank ``r`` of ``W`` processes takes positions
``p = r, r + W, r + 2W, ...``, so together the ranks see each epoch exactly once, a dataset shorter than
the run simply repeats, and the samples and their augmentation depend only on the seed (not on the number
of workers). Workers re-seed torch's generator per sample (:func:`seeded_sample`), so augmentation is
the same with 0 or 8 workers. Nothing but indices is held in memory; samples are read on demand. With
``data.skip_bad`` a pair that cannot be read is replaced by the next readable one, drawn with the same
seed, so the batches stay a function of the seed (and of which files are bad).

Hand-written sampler rather than ``DistributedSampler``: that one is epoch-based and needs ``set_epoch``
calls, while segkd trains by iterations and must repeat short datasets without a notion of epochs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

from segkd.config_schema import DataConfig
from segkd.data.base import DatasetError
from segkd.labels import IGNORE_INDEX

SKIPPED = "skipped"  # with data.skip_bad, per sample: the problems of the pairs skipped in its place


def dist_info() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, or (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _mix(seed: int, *values: int) -> int:
    """A 63-bit seed from ``seed`` and ``values`` (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([seed, *values]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


class InfiniteSampler(Sampler):
    """Yields ``(index, augmentation_seed)`` pairs of this rank's share of the global stream (see module doc).

    ``num_samples`` samples are yielded (``None``: forever), starting at this rank's ``start``-th position.
    """

    def __init__(
        self,
        dataset_len: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_samples: int | None = None,
        start: int = 0,
    ) -> None:
        if dataset_len <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.seed, self.rank, self.world = dataset_len, int(seed), rank, world_size
        self.num_samples, self.start = num_samples, start

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("an endless sampler has no length")
        return self.num_samples

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(_mix(self.seed, 0, epoch))
        return torch.randperm(self.n, generator=generator)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        count, k = 0, self.start
        epoch, perm = -1, None
        while self.num_samples is None or count < self.num_samples:
            position = k * self.world + self.rank
            if position // self.n != epoch:
                epoch = position // self.n
                perm = self._permutation(epoch)
            yield int(perm[position % self.n]), _mix(self.seed, 1, position)
            count, k = count + 1, k + 1


def seeded_sample(dataset: Any, index: int, seed: int, skip_bad: bool = False) -> dict[str, Any]:
    """``dataset[index]`` loaded with torch's CPU generator seeded by ``seed``.

    ``skip_bad``: a pair whose reading raises :class:`DatasetError` is replaced by the next readable one
    (``index + 1``, ``index + 2`` ... wrapping around), drawn with the same seed; the sample's
    :data:`SKIPPED` entry lists the problems of the skipped pairs ("" when none). Without it the error
    propagates.
    """
    problems: list[str] = []
    for step in range(len(dataset)):
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: the same stream as torch.manual_seed, without its CUDA/MPS/XPU
            # seeding, which in a process without CUDA queues a lazy call with a formatted stack trace
            # (measured: 19 % of a demo training step, 0.1-1.4 ms per sample, growing with the depth of
            # the call stack; the mixed loader of data.unlabeled paid it too until issue 26).
            torch.default_generator.manual_seed(seed)
            try:
                sample = dataset[(index + step) % len(dataset)]
            except DatasetError as err:
                if not skip_bad:
                    raise
                problems.append(str(err))
                continue
        return {**sample, SKIPPED: "\n".join(problems)} if skip_bad else sample
    raise DatasetError(f"data.skip_bad: none of the {len(dataset)} training pairs can be read; first: "
                       f"{problems[0]}")


def worker_error_message(err: BaseException) -> str:
    """The original one-line message of an error a DataLoader worker raised (torch re-raises it as
    ``Caught X in DataLoader worker process N.`` followed by the worker's traceback), else ``str(err)``."""
    text = str(err).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


class _SeededSamples(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` is :func:`seeded_sample`'s."""

    def __init__(self, dataset: Dataset, skip_bad: bool = False) -> None:
        self.dataset, self.skip_bad = dataset, skip_bad

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        return seeded_sample(self.dataset, index, seed, self.skip_bad)


def _worker_init(worker_id: int) -> None:
    """Seed numpy in each worker from torch's per-worker seed (for datasets that use numpy randomness)."""
    np.random.seed(torch.initial_seed() % (2**32))


def build_train_loader(
    dataset: Dataset, cfg: DataConfig, seed: int, total_samples: int | None = None, start_batch: int = 0
) -> DataLoader:
    """Endless (or ``total_samples``-long) training loader of per-process batches of ``cfg.batch_size``.

    ``total_samples``: samples THIS process draws (rounded up to whole batches); ``None``: forever.
    ``start_batch``: skip this many batches of the stream (to resume a run exactly where it stopped).
    Deterministic given ``seed``; under ``torch.distributed`` each rank draws a disjoint share.
    """
    rank, world = dist_info()
    batches = None if total_samples is None else -(-int(total_samples) // cfg.batch_size)
    sampler = InfiniteSampler(
        len(dataset),
        seed,
        rank,
        world,  # type: ignore[arg-type]
        num_samples=None if batches is None else batches * cfg.batch_size,
        start=start_batch * cfg.batch_size,
    )
    return DataLoader(
        _SeededSamples(dataset, cfg.skip_bad),
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
        worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(int(seed)),  # keeps the global RNG untouched
        persistent_workers=cfg.workers > 0 and batches is None,
        prefetch_factor=cfg.prefetch_factor if cfg.workers > 0 else None,  # batches in flight per worker
    )


class ShardSampler(Sampler):
    """Indices ``rank, rank + W, ...``: every sample exactly once across ranks, no padding, in order."""

    def __init__(self, dataset_len: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, dataset_len, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def pad_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate full-size samples of different sizes: pad bottom/right (image 0, label ignore) to the max."""
    heights = [s["label"].shape[0] for s in samples]
    widths = [s["label"].shape[1] for s in samples]
    if len(set(heights)) == 1 and len(set(widths)) == 1:
        return default_collate(samples)
    h, w = max(heights), max(widths)
    padded = []
    for s in samples:
        ph, pw = h - s["label"].shape[0], w - s["label"].shape[1]
        image = torch.nn.functional.pad(s["image"], (0, pw, 0, ph), value=0.0)
        label = torch.nn.functional.pad(s["label"], (0, pw, 0, ph), value=IGNORE_INDEX)
        padded.append({**s, "image": image, "label": label})
    return default_collate(padded)


def build_val_loader(dataset: Dataset, cfg: DataConfig) -> DataLoader:
    """Full-size evaluation loader (batch ``cfg.val_batch_size``); ranks split the samples without overlap.

    Batches of images with different sizes are padded with ignore labels (:func:`pad_collate`).
    """
    rank, world = dist_info()
    return DataLoader(
        dataset,
        batch_size=cfg.val_batch_size,
        sampler=ShardSampler(len(dataset), rank, world),  # type: ignore[arg-type]
        num_workers=cfg.workers,
        pin_memory=torch.cuda.is_available(),
        collate_fn=pad_collate,
        worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=cfg.workers > 0,  # the trainer re-iterates it at every validation
        prefetch_factor=cfg.prefetch_factor if cfg.workers > 0 else None,
    )
