"""Build a teacher cache for a recipe: the same teacher the run would build, the keys its terms read,
the splits to cache (``segkd cache-teacher``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from segkd.cache.attach import plan_terms
from segkd.cache.fingerprint import cache_fingerprint
from segkd.cache.writer import write_cache
from segkd.config_schema import ExperimentConfig
from segkd.outputs import check_writable


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def recipe_keys(
    cfg: ExperimentConfig, student: Any, teacher: Any, num_classes: int, ignore_index: int
) -> list[str]:
    """The teacher outputs the recipe's cacheable terms read (live-only terms are skipped here; the
    training run decides whether to refuse them)."""
    from segkd.engine import builder

    plain = dataclasses.replace(cfg, distill=dataclasses.replace(
        cfg.distill, teacher=dataclasses.replace(cfg.distill.teacher, cache=None)))
    distiller = builder.build_distiller(plain, student, teacher, num_classes, ignore_index)
    _, keys = plan_terms(dict(distiller.losses.items()), mixed=True)
    if not keys:
        raise ValueError("segkd cache-teacher: no configured term can read a teacher cache "
                         "(distill.losses is empty or every term needs the live teacher)")
    return sorted(keys)


def cache_teacher(cfg: ExperimentConfig, root: str | Path | None = None, splits: list[str] | None = None,
                  codec: str = "float16", topk: int = 4, keys: list[str] | None = None,
                  overwrite: bool = False, error_images: int = 8, progress: bool = True) -> dict[str, Any]:
    """Write the cache of ``splits`` (default: the training split), and of the ``data.unlabeled`` images
    as pool ``unlabeled`` when set, for ``cfg``'s teacher in ``root`` (default: ``distill.teacher.cache``);
    returns the manifest with ``root`` added."""
    from segkd.data import build_dataset_from_config
    from segkd.engine import builder
    from segkd.engine.seeding import seed_everything

    if cfg.distill.teacher is None:
        raise ValueError("segkd cache-teacher: the config has no distill.teacher")
    root = root or cfg.distill.teacher.cache
    if not root:
        raise ValueError("segkd cache-teacher: give the cache folder (distill.teacher.cache=DIR or "
                         "--out DIR)")
    check_writable(root, "the teacher cache folder", "choose a writable --out (or distill.teacher.cache)")
    splits = splits or [cfg.data.train_split]
    conv = cfg.model.input
    pools = {s: build_dataset_from_config(cfg.data, s, train=False, convention=conv) for s in splits}
    first = next(iter(pools.values()))
    if cfg.data.unlabeled is not None and "unlabeled" not in pools:  # the data.unlabeled images, un-augmented
        from segkd.data.mixed import build_unlabeled_dataset
        from segkd.data.transforms import build_transforms

        pools["unlabeled"] = build_unlabeled_dataset(cfg.data, list(first.class_names), conv)
        pools["unlabeled"].transform = build_transforms(cfg.data, train=False, convention=conv)
    num_classes = builder.dataset_num_classes(cfg, first)
    seed_everything(cfg.train.seed, cfg.train.deterministic, cfg.train.threads)  # as the trainer does
    student = builder.build_student(cfg.model, num_classes)
    teacher = builder.build_teacher(cfg, num_classes, list(first.class_names))
    keys = keys or recipe_keys(cfg, student, teacher, num_classes, getattr(first, "ignore_index", 255))
    del student
    fingerprint = cache_fingerprint(cfg, teacher, pools, first.class_names)
    crop = (int(cfg.data.crop_size[0]), int(cfg.data.crop_size[1]))
    manifest = write_cache(teacher, pools, root, keys, fingerprint, crop, codec, topk,
                           _device(cfg.train.device), error_images, overwrite, progress)
    return {**manifest, "root": str(root)}


def describe_repairs(repaired: dict[str, list[int]], pools: dict[str, Any]) -> str:
    """``checked N entries: all intact`` or ``... re-wrote K damaged entries (pool: i, j, ...)``."""
    checked = sum(int(stats["count"]) for stats in pools.values())
    count = sum(len(v) for v in repaired.values())
    if not count:
        return f"checked {checked} entries: all intact"
    listed = "; ".join(f"{pool}: {', '.join(map(str, indices))}" for pool, indices in repaired.items())
    return f"checked {checked} entries, re-wrote {count} damaged entr{'ies' if count > 1 else 'y'} ({listed})"


def describe(manifest: dict[str, Any]) -> str:
    """A few lines: storage per image and per split, compressed-target error."""
    lines = [f"teacher cache {manifest['root']}: {', '.join(manifest['keys'])}, codec {manifest['codec']}"
             + (f" (k={manifest['topk']})" if manifest.get("topk") else "")]
    for pool, stats in manifest["pools"].items():
        maps = ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in stats["map_bytes_first_image"].items())
        h, w = stats["first_image_size"]
        lines.append(f"  {pool}: {stats['count']} images, {stats['bytes'] / 2**20:.2f} MiB on disk, "
                     f"{stats['bytes_per_image'] / 1024:.1f} KiB per image ({h}x{w}: {maps})")
    resumed = " (this run resumed an interrupted write)" if manifest["resumed"] else ""
    lines.append(f"  written in {manifest['write_seconds']:.1f} s{resumed}")
    lines.append("  " + describe_repairs(manifest.get("repaired", {}), manifest["pools"]))
    err = manifest["error"]
    if err.get("kl_t1") is not None:
        lines.append(f"  error vs float32 on {err['images']} images: KL {err['kl_t1']:.3g} nats/pixel at T=1 "
                     f"(max {err['kl_t1_max']:.3g}), {err['kl_t4']:.3g} at T=4")
    lines.append("  max |stored - float32|: " + ", ".join(f"{k} {v:.3g}" for k, v in err["max_abs"].items()))
    return "\n".join(lines)
