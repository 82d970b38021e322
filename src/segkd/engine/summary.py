"""``RUN_DIR/summary.json``: one line per run for ``segkd report`` and the demo table."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from torch import nn

from segkd.config_schema import ExperimentConfig
from segkd.models.profile import profile_model
from segkd.outputs import write_text
from segkd.rundir import RunDir


def method_name(cfg: ExperimentConfig) -> str:
    """Distill terms joined by '+' (e.g. ``kd+skd_pairwise``), or ``baseline`` without any."""
    return "+".join(t.name for t in cfg.distill.losses) or "baseline"


def profile(model: nn.Module, cfg: ExperimentConfig) -> dict[str, Any]:
    """Deployment params / MACs (no aux head, true sizes) and median CPU latency at the crop size.

    Uses :func:`segkd.models.profile.profile_model`; the CIRKD-table convention (aux head included,
    dilation ignored) is kept as ``params_paper`` / ``macs_paper``.
    """
    size = tuple(cfg.data.crop_size)

    cpu_copy = copy.deepcopy(model).cpu().eval()
    stats = profile_model(cpu_copy, size, latency=True)
    return {
        "params": stats["deploy"]["params"],
        "macs": stats["deploy"]["macs"],
        "latency_ms": stats["latency"]["median_ms"],
        "params_paper": stats["paper"]["params"],
        "macs_paper": stats["paper"]["macs"],
        "profile_size": list(size),
    }


def environment() -> dict[str, Any]:
    """What decides whether a rerun repeats this one bit for bit: library versions, threads, device."""
    import platform

    import torch

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def write_summary(
    cfg: ExperimentConfig,
    run_dir: Path,
    model: nn.Module,
    miou: float,
    train_time_s: float,
    iters: int,
    method: str | None = None,
    config_changes: list[dict[str, Any]] | None = None,
    budget: dict[str, Any] | None = None,
    skipped: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write and return ``{"name", "model", "method", "params", "macs", "latency_ms", "miou",
    "train_time_s", "iters"}``, plus ``config_changes`` (``[{"iteration", "changes"}]``) when the run was
    resumed with changed settings, ``budget`` (:class:`segkd.engine.budget.Budget` state), ``skipped``
    (``[{"iteration", "problem"}]``: training pairs ``data.skip_bad`` replaced) when any, and ``env``
    (library versions and CPU threads: what a bit-identical rerun needs to match)."""
    stats = profile(model, cfg)
    summary = {
        "name": cfg.name,
        "model": cfg.model.name,
        "method": method or method_name(cfg),
        "params": stats.pop("params"),
        "macs": stats.pop("macs"),
        "latency_ms": stats.pop("latency_ms"),
        "miou": miou,
        "train_time_s": round(train_time_s, 2),
        "iters": iters,
        **stats,
    }
    if config_changes:
        summary["config_changes"] = config_changes
    if budget is not None:
        summary["budget"] = budget
    if skipped:
        summary["skipped"] = skipped
    summary["env"] = environment()
    write_text(RunDir(run_dir).summary, json.dumps(summary, indent=2))
    return summary
