"""What a teacher cache was computed from: the teacher's weights, the classes, the data and its
preprocessing; a run that differs in any of them refuses the cache with one line (:func:`check_match`).

The teacher is identified by the SHA-256 of its weights (every tensor of its ``state_dict``, via
:func:`segkd.checkpoint_io.state_checksum`), which covers a changed checkpoint file, another architecture
or a random init from another seed; the checkpoint file's own SHA-256 is recorded too (for the report).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from segkd.checkpoint_io import state_checksum
from segkd.config_schema import ExperimentConfig


class CacheMismatchError(ValueError):
    """The cache was computed from another teacher, other classes or other data; one line saying which."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 over every tensor of ``module.state_dict()`` (names, dtypes, shapes, bytes)."""
    return state_checksum(dict(module.state_dict()))


def names_sha256(names: Sequence[str]) -> str:
    """SHA-256 of the sample names in order (one per line)."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def sample_names(dataset: Any) -> list[str] | None:
    """The dataset's sample names in index order when it lists them without reading files
    (file-pair datasets); None otherwise (the names are then checked per sample as it is read)."""
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list) and all(hasattr(s, "name") for s in samples):
        return [s.name for s in samples]
    return None


def teacher_fingerprint(cfg: ExperimentConfig, teacher: nn.Module) -> dict[str, Any]:
    """The teacher's identity: weights hash, checkpoint file hash, name / source / output stride."""
    t = cfg.distill.teacher
    assert t is not None
    checkpoint = t.checkpoint
    return {
        "weights_sha256": weights_sha256(teacher),
        "checkpoint": checkpoint,
        "checkpoint_sha256": file_sha256(checkpoint) if checkpoint and Path(checkpoint).is_file() else None,
        "name": t.name,
        "source": t.source,
        "output_stride": t.output_stride,
    }


def data_fingerprint(cfg: ExperimentConfig, class_names: Sequence[str]) -> dict[str, Any]:
    """The classes and the preprocessing every cached map depends on (not the augmentation, which is
    replayed per sample)."""
    from segkd.input_convention import to_meta

    t, conv = cfg.distill.teacher, cfg.model.input
    return {
        "dataset": cfg.data.name,
        "class_names": list(class_names),
        "mean": [float(v) for v in conv.mean],  # the student's input convention (mean / std: older caches)
        "std": [float(v) for v in conv.std],
        "channel_order": conv.channel_order,
        "pixel_max": float(conv.pixel_max),
        "teacher_input_mean": None if t is None or t.input_mean is None else list(t.input_mean),
        "teacher_input_std": None if t is None or t.input_std is None else list(t.input_std),
        "teacher_input": None if t is None or t.input is None else to_meta(t.input),
        "options": {k: cfg.data.options[k] for k in sorted(cfg.data.options)},
    }


def check_match(cache_dir: str | Path, recorded: dict[str, Any], current: dict[str, Any], what: str) -> None:
    """Raise :class:`CacheMismatchError` naming the first field where ``current`` differs from the
    ``recorded`` fingerprint (``what``: "teacher" or "data")."""
    ignore = {"checkpoint", "checkpoint_sha256"}  # the weights hash decides; these are for the report
    for key, value in recorded.items():
        if key in ignore or current.get(key) == value:
            continue
        if key == "weights_sha256":
            detail = (f"teacher weights sha256 {_short(value)} (checkpoint {recorded.get('checkpoint')}) "
                      f"!= this run's {_short(current.get(key))} (checkpoint {current.get('checkpoint')})")
        else:
            detail = f"{what} {key} {_short(value)} != this run's {_short(current.get(key))}"
        raise CacheMismatchError(
            f"teacher cache {cache_dir} was computed from another {what}: {detail}; rebuild it with "
            "`segkd cache-teacher CONFIG` or remove distill.teacher.cache"
        )


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:12] + "..." + text[-6:]


def cache_fingerprint(cfg: ExperimentConfig, teacher: nn.Module, pools: dict[str, Any],
                      class_names: Sequence[str]) -> dict[str, Any]:
    """Everything a cache of ``pools`` is checked against: teacher, data and, where the datasets list
    them, the SHA-256 of each pool's sample names."""
    names = {pool: sample_names(ds) for pool, ds in pools.items()}
    return {"teacher": teacher_fingerprint(cfg, teacher), "data": data_fingerprint(cfg, class_names),
            "names": {pool: names_sha256(n) for pool, n in names.items() if n is not None}}
