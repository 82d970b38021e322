"""A training run with ``distill.teacher.cache: DIR``: check the cache, decide which terms read it, and
give the training samples their replayed maps.

:func:`plan_terms`: each term declares what it reads (:meth:`DistillLoss.teacher_reads`); a term that
needs the live teacher refuses the cache with one line naming it, before training starts, unless
``distill.teacher.cache_mixed`` is set, in which case the live teacher runs for those terms only (and is
not run, nor kept in memory, when no term needs it). :func:`attach_to_distiller` checks the teacher's
identity and sets the distiller's ``cache_terms``; :func:`cached_train_set` checks the data and every
entry file of the pool (SHA-256 against the manifest), then wraps the training set in
:class:`~segkd.cache.replay.CachedTargets`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from segkd.cache.fingerprint import (
    CacheMismatchError,
    check_match,
    data_fingerprint,
    names_sha256,
    sample_names,
    teacher_fingerprint,
)
from segkd.cache.replay import CachedTargets
from segkd.cache.store import TeacherCache
from segkd.config_schema import ExperimentConfig
from segkd.losses.base import DistillLoss


class CacheRefusedError(ValueError):
    """A configured term cannot read a teacher cache; the message names the term and why."""


def plan_terms(losses: dict[str, DistillLoss], mixed: bool = False) -> tuple[set[str], set[str]]:
    """(names of the terms that read the cache, the teacher outputs they read).

    A term whose ``teacher_reads()`` is None needs the live teacher: :class:`CacheRefusedError` naming it,
    unless ``mixed`` (then it is left out of the first set and runs on the live teacher)."""
    cached, keys = set(), set()
    for name, loss in losses.items():
        reads = loss.teacher_reads()
        if reads is None:
            if not mixed:
                raise CacheRefusedError(
                    f"distill.teacher.cache: term '{name}' ({type(loss).__name__}) cannot use a teacher "
                    f"cache: "
                    f"{loss.live_teacher_reason}; remove the term or the cache, or set "
                    "distill.teacher.cache_mixed=true to run the live teacher for it"
                )
            continue
        cached.add(name)
        keys |= set(reads)
    return cached, keys


def attach_to_distiller(distiller: Any, cfg: ExperimentConfig, teacher: nn.Module) -> TeacherCache:
    """Open ``cfg.distill.teacher.cache``, refuse it for another teacher, plan the terms (above) and set
    ``distiller.cache_terms``; drop the teacher from the distiller when no term runs it live."""
    t = cfg.distill.teacher
    assert t is not None and t.cache
    cache = TeacherCache(t.cache)
    recorded = cache.manifest["fingerprint"]["teacher"]
    check_match(t.cache, recorded, teacher_fingerprint(cfg, teacher), "teacher")
    cached, keys = plan_terms(dict(distiller.losses.items()), t.cache_mixed)
    missing = sorted(keys - set(cache.keys))
    if missing:
        readers = sorted(n for n in cached if set(distiller.losses[n].teacher_reads()) & set(missing))
        raise CacheMismatchError(
            f"teacher cache {t.cache} holds {', '.join(cache.keys)} but term '{readers[0]}' reads "
            f"{', '.join(missing)}; rebuild it with `segkd cache-teacher CONFIG` for this recipe"
        )
    distiller.cache_terms = frozenset(cached)
    if len(cached) == len(distiller.losses):
        distiller.teacher = None  # no term runs it: not moved to the device, never called
    return cache


def cached_train_set(dataset: Any, cfg: ExperimentConfig, pool: str | None = None) -> CachedTargets:
    """``dataset`` (the pool ``pool``: default the training split; ``"unlabeled"`` for the
    ``data.unlabeled`` images) with the cache's maps replayed per sample, after checking the classes, the
    preprocessing and the sample list against the cache's, and every entry of the pool against the
    SHA-256 recorded when it was written (before the first step, not when an entry is drawn)."""
    t = cfg.distill.teacher
    assert t is not None and t.cache
    cache = TeacherCache(t.cache)
    recorded = cache.manifest["fingerprint"]
    check_match(t.cache, recorded["data"], data_fingerprint(cfg, dataset.class_names), "data")
    pool = pool or cfg.data.train_split
    check_pool(cache, pool, dataset)
    return CachedTargets(dataset, cache, pool, cache.keys)


def check_pool(cache: TeacherCache, pool: str, dataset: Any) -> None:
    """Refuse ``cache`` for ``dataset`` unless its ``pool`` holds these very images (count, sample names)
    and every entry of it matches the SHA-256 recorded when it was written; one line naming the cache."""
    count = cache.count(pool)
    if count != len(dataset):
        raise CacheMismatchError(
            f"teacher cache {cache.root} holds {count} '{pool}' images but this run's split has "
            f"{len(dataset)}; rebuild it with `segkd cache-teacher CONFIG`"
        )
    names = sample_names(dataset)
    expected = cache.manifest["fingerprint"].get("names", {}).get(pool)
    if names is not None and expected is not None and names_sha256(names) != expected:
        raise CacheMismatchError(f"teacher cache {cache.root}: the '{pool}' images differ from the cached "
                                 "ones (another sample list); rebuild it with `segkd cache-teacher CONFIG`")
    cache.verify(pool)
