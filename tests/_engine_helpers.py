"""Shared helpers of the engine tests: a tiny CPU config on the synthetic dataset."""

from __future__ import annotations

from pathlib import Path

from segkd.config import load_config
from segkd.config_schema import ExperimentConfig


def tiny_overrides(out: Path, iters: int = 4, **extra: object) -> list[str]:
    """Overrides for a seconds-long CPU run of the tiny student on 32x32 synthetic scenes."""
    base = {
        "name": out.name,
        "output_dir": str(out),
        "model.name": "test_tiny_student",
        "data.name": "synthetic",
        "data.crop_size": "[32,32]",
        "data.batch_size": 2,
        "data.workers": 0,
        "data.options": "{num_samples: 8, image_size: 32}",
        "train.iters": iters,
        "train.log_interval": 1,
        "train.device": "cpu",
        "train.deterministic": "true",
        "eval.num_visualize": 1,
    }
    base.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]


def tiny_config(out: Path, iters: int = 4, **extra: object) -> ExperimentConfig:
    """Validated config from :func:`tiny_overrides` (keys with ``__`` stand for dots)."""
    return load_config(None, tiny_overrides(out, iters, **extra))
