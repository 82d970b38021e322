"""``segkd cache-teacher``: run the frozen teacher once over un-augmented images and store its maps.

Each image of each pool (the training split; any other split or image folder passed as a pool, e.g. an
unlabelled pool) goes through the evaluation transform (normalisation only, full size) and one teacher
forward of batch 1 at full resolution: images are not tiled, so a 1024x2048 Cityscapes image costs one
whole-image forward (the same as ``eval.mode: whole``); on a small GPU, cache on the CPU
(``train.device=cpu``), which is slower but bounded by host memory. The maps the terms read (``logits``,
``aux_logits``, ``feat``) are kept at the teacher's own output resolution and encoded by
:mod:`segkd.cache.codec`, one atomic entry file per image (:mod:`segkd.cache.store`).

Resumable: entries already on disk for the same fingerprint (``writing.pt``) are read back (weights-only,
embedded checksum) and kept when intact; damaged ones are re-written with the missing ones. Atomic:
``manifest.pt``, without which no run accepts the folder, is renamed into place only after the last entry
and the error measurement; it records the SHA-256 of every entry file. Run again on a finished cache, the
writer checks every entry against those hashes and re-writes the damaged ones (``repaired`` in the returned
manifest: {pool: [indices]}).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from segkd.cache import store
from segkd.cache.codec import LOGIT_KEYS, decode, encode, nbytes, pixel_kl
from segkd.cache.fingerprint import file_sha256
from segkd.checkpoint_io import read_checkpoint, write_checkpoint

CACHEABLE_KEYS = ("logits", "aux_logits", "feat")


@torch.no_grad()
def teacher_maps(teacher: nn.Module, images: Tensor, keys: list[str]) -> dict[str, Tensor]:
    """The teacher's ``keys`` maps for (N, 3, H, W) ``images`` (eval mode, no grad); ``aux_logits`` from
    the aux head on its stage when eval mode skipped it (as :meth:`Distiller.teacher_forward`)."""
    out = teacher(images)
    maps = {}
    for key in keys:
        value = getattr(out, key)
        if key == "aux_logits" and value is None:
            aux_head = getattr(teacher, "aux_head", None)
            if aux_head is None:
                raise ValueError("teacher cache: a term reads the teacher's aux logits but the teacher has "
                                 "no aux head (build it with model.aux: true)")
            value = aux_head(out.stages[teacher.aux_index])[0]
        maps[key] = value
    return maps


def probe_sizes(teacher: nn.Module, crop_size: tuple[int, int], keys: list[str], device: Any) -> dict:
    """Sizes of the teacher's maps for one training crop (``crop_map_size`` of the replay)."""
    images = torch.zeros(1, 3, *crop_size, device=device)
    maps = teacher_maps(teacher, images, keys)
    return {"crop_size": list(crop_size), "sizes": {k: list(v.shape[-2:]) for k, v in maps.items()}}


def _prepare_folder(root: Path, fingerprint: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Check what is already in ``root``: the finished manifest when it matches (nothing to do), else
    keep matching partial entries or (``overwrite``) clear the folder; another cache is an error."""
    manifest, writing = root / store.MANIFEST, root / store.WRITING
    for path, state in ((manifest, "a finished"), (writing, "a partial")):
        if not path.is_file():
            continue
        saved = read_checkpoint(path)
        if saved.get("fingerprint") == fingerprint:
            return saved if path == manifest else None
        if not overwrite:
            raise ValueError(
                f"teacher cache {root} holds {state} cache of another teacher, data or settings; pass "
                "--overwrite to replace it, or choose another folder"
            )
        manifest.unlink(missing_ok=True)  # first: from here on no run accepts the folder
        for child in root.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        break
    return None


def write_cache(
    teacher: nn.Module,
    pools: Mapping[str, Any],
    root: str | Path,
    keys: list[str],
    fingerprint: dict[str, Any],
    crop_size: tuple[int, int],
    codec: str = "float16",
    topk: int = 4,
    device: str | torch.device = "cpu",
    error_images: int = 8,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write (or finish) the cache of ``pools`` ({pool name: dataset with the evaluation transform}) in
    ``root`` and return its manifest (see the module doc).

    ``fingerprint``: the teacher / data identity (:mod:`segkd.cache.fingerprint`); the codec, k, keys and
    pool sizes are added to it. ``error_images``: images of the first pool on which the stored (decoded)
    targets are compared with the float32 teacher output.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    bad = [k for k in keys if k not in CACHEABLE_KEYS]
    if bad or not keys:
        raise ValueError(f"teacher cache: keys must be among {', '.join(CACHEABLE_KEYS)}, got {keys}")
    fingerprint = {**fingerprint, "keys": sorted(keys), "codec": codec,
                   "topk": topk if codec == "topk" else None,
                   "pools": {name: len(ds) for name, ds in pools.items()}}
    saved = _prepare_folder(root, fingerprint, overwrite)
    teacher = teacher.to(device).eval()
    if saved is not None:
        return _check_finished(teacher, pools, root, saved, sorted(keys), codec, topk, device, progress)
    resumed = (root / store.WRITING).is_file()
    write_checkpoint({"fingerprint": fingerprint}, root / store.WRITING, kept=store.KEPT_ON_FULL_DISK)
    tic = time.perf_counter()
    probe = probe_sizes(teacher, crop_size, sorted(keys), device)
    pool_stats, repaired = {}, {}
    for name, dataset in pools.items():
        problems = store.damaged_entries(root, name, len(dataset))  # kept entries are read back first
        _write_entries(teacher, dataset, root, name, sorted(keys), codec, topk, device, progress,
                       sorted(problems))
        pool_stats[name] = _pool_stats(root, name, len(dataset))
        damaged = sorted(i for i, problem in problems.items() if problem != "missing")
        if damaged:
            repaired[name] = damaged
    seconds = time.perf_counter() - tic
    first = next(iter(pools))
    error = measure_codec_error(teacher, pools[first], root, first, sorted(keys), error_images, device)
    manifest = {"format": store.FORMAT_VERSION, "fingerprint": fingerprint, "keys": sorted(keys),
                "codec": codec, "topk": topk if codec == "topk" else None, "pools": pool_stats,
                "crop_probe": probe, "error": error, "sha256": _entry_sums(root, pools),
                "write_seconds": seconds, "resumed": resumed}  # the one-off cost (this invocation's writes)
    write_checkpoint(manifest, root / store.MANIFEST, kept=store.KEPT_ON_FULL_DISK)
    (root / store.WRITING).unlink(missing_ok=True)
    return {**manifest, "repaired": repaired}


def _check_finished(teacher: nn.Module, pools: Mapping[str, Any], root: Path, saved: dict[str, Any],
                    keys: list[str], codec: str, topk: int, device: Any, progress: bool) -> dict[str, Any]:
    """A finished cache of the same fingerprint: check every entry against the manifest's SHA-256
    (format 1 manifests have none: entries are read back), re-write the damaged ones and record their
    new hashes. Returns the manifest with ``repaired`` ({pool: [indices]})."""
    sums = saved.get("sha256") or {}
    repaired = {}
    for name, dataset in pools.items():
        problems = store.damaged_entries(root, name, len(dataset), sums.get(name))
        if problems:
            repaired[name] = sorted(problems)
            _write_entries(teacher, dataset, root, name, keys, codec, topk, device, progress, repaired[name])
    if repaired or saved.get("format") != store.FORMAT_VERSION:
        saved = {**saved, "format": store.FORMAT_VERSION, "sha256": _entry_sums(root, pools)}
        write_checkpoint(saved, root / store.MANIFEST)
    return {**saved, "repaired": repaired}


def _entry_sums(root: Path, pools: Mapping[str, Any]) -> dict[str, list[str]]:
    """The SHA-256 of every entry file, per pool in index order (what a run verifies them against)."""
    return {name: [file_sha256(store.entry_path(root, name, i)) for i in range(len(dataset))]
            for name, dataset in pools.items()}


def _write_entries(teacher: nn.Module, dataset: Any, root: Path, pool: str, keys: list[str], codec: str,
                   topk: int, device: Any, progress: bool, indices: list[int]) -> None:
    """Run the teacher on the images ``indices`` of one pool and write their entries."""
    bar = tqdm(total=len(dataset), initial=len(dataset) - len(indices), desc=f"cache-teacher {pool}",
               unit="img", disable=not progress)
    for index in indices:
        sample = dataset[index]
        image = sample["image"]
        maps = teacher_maps(teacher, image[None].to(device), keys)
        entry = {"name": sample["name"], "size": list(image.shape[-2:]),
                 "maps": {k: encode(v[0], codec, k, topk) for k, v in maps.items()}}
        store.write_entry(root, pool, index, entry)
        bar.update(1)
    bar.close()


def _pool_stats(root: Path, pool: str, count: int) -> dict[str, Any]:
    """A pool's count and storage (bytes on disk, per image, per map of the first image)."""
    files = [store.entry_path(root, pool, i) for i in range(count)]
    file_bytes = sum(p.stat().st_size for p in files)
    sample_entry = read_checkpoint(files[0])
    return {"count": count, "bytes": file_bytes, "bytes_per_image": file_bytes / max(len(files), 1),
            "first_image_size": sample_entry["size"],
            "map_bytes_first_image": {k: nbytes(v) for k, v in sample_entry["maps"].items()}}


@torch.no_grad()
def measure_codec_error(teacher: nn.Module, dataset: Any, root: Path, pool: str, keys: list[str],
                        images: int, device: Any) -> dict[str, Any]:
    """Compressed vs float32 targets on the first ``images`` images: mean per-pixel KL at T = 1 and
    T = 4 (CWD's) for class maps, max |difference| for every map."""
    kl1, kl4, max_abs = [], [], {k: 0.0 for k in keys}
    for index in range(min(images, len(dataset))):
        exact = teacher_maps(teacher, dataset[index]["image"][None].to(device), keys)
        stored = read_checkpoint(store.entry_path(root, pool, index))["maps"]
        for key in keys:
            ref, got = exact[key][0].float().cpu(), decode(stored[key])
            max_abs[key] = max(max_abs[key], float((ref - got).abs().max()))
            if key in LOGIT_KEYS:
                kl1.append(float(pixel_kl(ref, got, 1.0)))
                kl4.append(float(pixel_kl(ref, got, 4.0)))
    mean = lambda v: sum(v) / len(v) if v else None  # noqa: E731
    return {"images": min(images, len(dataset)), "kl_t1": mean(kl1), "kl_t1_max": max(kl1, default=None),
            "kl_t4": mean(kl4), "max_abs": max_abs}
