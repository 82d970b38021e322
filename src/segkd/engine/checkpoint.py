"""Training checkpoints: atomic writes, RNG state capture, and ``resume=auto`` lookup.

Keys (docs/ARCHITECTURE.md): ``model``, ``losses``, ``optimizer``, ``scheduler``, ``adversary``,
``iteration``, ``rng``, ``config``, ``meta``. A write goes to a temporary file in the same folder and is
moved into place with ``os.replace`` (atomic on POSIX), so a crash mid-write never leaves a truncated
``latest.pt``.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """Snapshot of the python, numpy, torch (CPU) and CUDA random generators."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators captured by :func:`rng_state` (CUDA only when both sides have it)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a segkd checkpoint dict, with a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    # weights_only=False: checkpoints hold RNG states (numpy arrays, tuples) written by segkd itself.
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not a segkd training checkpoint (no 'model' key)")
    return ckpt


def checkpoint_dir(output_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/checkpoints``."""
    return Path(output_dir) / "checkpoints"


def resolve_resume(resume: str | None, output_dir: str | os.PathLike[str]) -> Path | None:
    """Checkpoint to resume from: None, ``auto`` (latest.pt of the run if present) or an explicit path."""
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        latest = checkpoint_dir(output_dir) / "latest.pt"
        return latest if latest.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"train.resume: checkpoint not found: {path}")
    return path
