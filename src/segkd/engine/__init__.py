"""Training loop, distiller, checkpointing, evaluation and metrics.

``train(cfg) -> Path`` (run directory) and ``evaluate(cfg, checkpoint) -> dict`` are the entry points
used by the ``segkd train`` / ``segkd eval`` commands and by the demo (:mod:`segkd.demo`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segkd.config_schema import ExperimentConfig

__all__ = ["evaluate", "train"]


def train(cfg: ExperimentConfig, data: Any = None) -> Path:
    """Train as configured (every stage of a multi-stage recipe, in order; see
    :mod:`segkd.engine.stages`); returns the run directory of the last stage.

    Fixes glibc's malloc thresholds for the process first (:mod:`segkd.engine.allocator`): what an
    iteration costs then does not depend on what the process ran before."""
    from segkd.engine.allocator import fix_malloc_thresholds

    fix_malloc_thresholds()
    if cfg.stages:
        from segkd.engine.stages import run_stages

        return run_stages(cfg, data)
    from segkd.engine.trainer import train as _train

    return _train(cfg, data)


def evaluate(cfg: ExperimentConfig, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint; see :func:`segkd.engine.evaluation.evaluate`."""
    from segkd.engine.evaluation import evaluate as _evaluate

    return _evaluate(cfg, checkpoint)
