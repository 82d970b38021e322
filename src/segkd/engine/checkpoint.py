"""Training checkpoints: RNG state capture, ``resume=auto`` lookup with fallback to the previous good file.

Keys (docs/ARCHITECTURE.md): ``model``, ``losses``, ``optimizer``, ``scheduler``, ``adversary``,
``iteration``, ``rng``, ``config``, ``meta``, ``checksum``. Reading and writing go through
:mod:`segkd.checkpoint_io` (``weights_only=True`` loading, checksum, atomic write, ``previous.pt``); every
value stored here is a tensor or a plain Python value, so nothing needs the full unpickler.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkd.checkpoint_io import (
    PREVIOUS_NAME,
    CheckpointReadError,
    UnsafeCheckpointError,
    read_checkpoint,
    refusal_reason,
    write_checkpoint,
)
from segkd.rundir import RunDir


def rng_state() -> dict[str, Any]:
    """Snapshot of the python, numpy, torch (CPU) and CUDA generators as tensors and plain lists.

    Plain types only, so that checkpoints load with weights-only unpickling.
    """
    version, mt_state, gauss = random.getstate()
    key, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt_state), gauss],
        "numpy": {
            "key": str(key),
            "state": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators captured by :func:`rng_state` (CUDA only when both sides have it)."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["key"],
            np_state["state"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str], keep_previous: bool = False) -> Path:
    """Write a training checkpoint atomically, with its checksum (see :mod:`segkd.checkpoint_io`)."""
    return write_checkpoint(state, path, keep_previous=keep_previous)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a segkd training checkpoint (safe loading, checksum verified), with one-line errors."""
    path = Path(path)
    ckpt = read_checkpoint(path, map_location=map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointReadError(f"{path} is not a segkd training checkpoint (no 'model' key)")
    return ckpt


def resolve_resume(resume: str | None, output_dir: str | os.PathLike[str]) -> Path | None:
    """Checkpoint to resume from: None, ``auto`` (latest.pt of the run if present) or an explicit path."""
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        run = RunDir(output_dir)
        return next((path for path in (run.latest, run.previous) if path.is_file()), None)
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"train.resume: checkpoint not found: {path}")
    return path


def load_resume_state(
    resume: str | None, output_dir: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[Path | None, dict[str, Any] | None]:
    """``(path, state)`` of the checkpoint to resume from, or ``(None, None)`` for a fresh run.

    With ``resume=auto`` a damaged ``latest.pt`` (empty, truncated, checksum mismatch) is reported and
    the previous good checkpoint (``previous.pt``, kept by every save of latest.pt) is used instead. When
    that fails too, or an explicitly named file is damaged, the error names every checkpoint in the folder
    with what is wrong with it, and how to resume from a readable one (e.g. ``best.pt``). A file that would
    need arbitrary unpickling is always refused.
    """
    path = resolve_resume(resume, output_dir)
    if path is None:
        return None, None
    previous = path.with_name(PREVIOUS_NAME)
    try:
        return path, load_checkpoint(path, map_location)
    except UnsafeCheckpointError:
        raise
    except CheckpointReadError as err:
        if resume == "auto" and path != previous and previous.is_file():
            try:
                state = load_checkpoint(previous, map_location)
            except CheckpointReadError:
                raise CheckpointReadError(no_resumable_checkpoint(path.parent)) from None
            print(
                f"segkd train: warning: {err}; resuming from the previous good checkpoint {previous} "
                f"(iteration {int(state['iteration'])})"
            )
            return previous, state
        raise CheckpointReadError(no_resumable_checkpoint(path.parent, path)) from None


def no_resumable_checkpoint(folder: Path, named: Path | None = None) -> str:
    """One line: every checkpoint in ``folder`` (latest, previous, best, then the others) with what is
    wrong with it or its iteration, and the ``train.resume=`` of the readable one with the most
    iterations; ``named``: the file the user asked for."""
    order = {"latest.pt": 0, PREVIOUS_NAME: 1, "best.pt": 2}
    files = sorted(folder.glob("*.pt"), key=lambda p: (order.get(p.name, 3), p.name))
    listed, readable = [], {}
    for file in files:
        try:
            readable[file] = int(load_checkpoint(file).get("iteration", 0))
            listed.append(f"{file.name}: readable (iteration {readable[file]})")
        except CheckpointReadError as err:
            listed.append(f"{file.name}: {refusal_reason(err, file)}")
    what = f"from {named}" if named else f"from {folder}: no readable latest.pt or {PREVIOUS_NAME}"
    message = f"cannot resume {what}; checkpoints in {folder}: {'; '.join(listed) or 'none'}"
    if not readable:
        return message + "; train into a new output_dir=... to start over"
    best = max(readable, key=lambda p: readable[p])
    return (f"{message}. Resume from {best.name} with train.resume={best} (training continues from its "
            f"iteration {readable[best]})")


# Settings a resumed run can take up from the iteration it resumes at. Any other changed setting could not
# take effect (the saved model, optimizer, schedule, data stream or loss modules would not follow it), so
# it is refused and named rather than silently ignored.
APPLIED_ON_RESUME = (
    "train.iters",
    "train.val_interval",
    "train.log_interval",
    "train.ckpt_interval",
    "train.device",
    "data.root",
    "data.workers",
    "data.skip_bad",
    "data.val_batch_size",
    "eval.",
)
# Initial-weight sources are overwritten by the resumed state; run identity keys are not settings.
IGNORED_ON_RESUME = ("train.resume", "output_dir", "name", "model.checkpoint", "model.pretrained")


class ResumeConfigError(ValueError):
    """Resuming with settings that the saved state cannot follow; the message names each changed key."""


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or prefix.endswith("options"):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def as_current_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A config saved by an older segkd in today's form: keys added since take their defaults (which are
    what the older code did) and old spellings move (``data.mean`` / ``data.std`` -> ``model.input``); a
    config that no longer validates is returned as it is."""
    from segkd.config import from_dict, to_dict
    from segkd.config_schema import ExperimentConfig

    try:
        return to_dict(from_dict(ExperimentConfig, saved))
    except (ValueError, TypeError):
        return saved


def changed_settings(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    """``{dotted key: [saved value, new value]}`` for every setting that differs (run identity excluded);
    ``saved`` is read in today's form (:func:`as_current_config`)."""
    a, b = _flatten(as_current_config(saved)), _flatten(new)
    changes = {}
    for key in sorted(a.keys() | b.keys()):
        if key in IGNORED_ON_RESUME:
            continue
        if a.get(key) != b.get(key):
            changes[key] = [a.get(key), b.get(key)]
    return changes


def check_resume_config(
    saved: dict[str, Any], new: dict[str, Any], path: str | os.PathLike[str]
) -> dict[str, list[Any]]:
    """The settings changed since ``path`` was written, all of them in :data:`APPLIED_ON_RESUME`.

    Raises :class:`ResumeConfigError` naming every changed setting that cannot take effect on resume.
    """
    changes = changed_settings(saved, new) if saved else {}
    refused = {k: v for k, v in changes.items() if not k.startswith(APPLIED_ON_RESUME)}
    if refused:
        listed = "; ".join(f"{k}: {old!r} -> {value!r}" for k, (old, value) in refused.items())
        raise ResumeConfigError(
            f"cannot resume from {path}: these settings differ from the run's and cannot take effect on "
            f"resume: {listed}. Undo them, or train into a new output_dir=... (settings that can change on "
            f"resume: {', '.join(APPLIED_ON_RESUME)})"
        )
    return changes
