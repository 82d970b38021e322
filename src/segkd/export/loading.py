"""Rebuild a trained student from a segkd checkpoint (or a run directory) for inference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from segkd.export.metadata import ModelMeta
from segkd.rundir import RunDir


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its ``checkpoints/best.pt``, else ``latest.pt``)."""
    path = Path(path)
    if path.is_dir():
        return RunDir(path).trained_checkpoint()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def load_student(path: str | Path) -> tuple[nn.Module, ModelMeta]:
    """Build the student of a checkpoint (``config`` + ``model`` keys) in eval mode, without its aux head.

    The model config is rebuilt with ``segkd.config.from_dict(ExperimentConfig, ckpt["config"])``; its
    ``checkpoint``/``pretrained`` fields are cleared so that nothing but this file's weights is loaded.
    """
    from segkd.config import from_dict
    from segkd.config_schema import ExperimentConfig
    from segkd.engine.checkpoint import load_checkpoint
    from segkd.models import build_model_from_config

    path = resolve_checkpoint(path)
    ckpt = load_checkpoint(path)
    meta = ModelMeta.from_checkpoint(ckpt, source=str(path))
    if "config" not in ckpt:
        raise ValueError(f"{path}: checkpoint has no 'config' key; cannot rebuild the model")
    cfg = from_dict(ExperimentConfig, ckpt["config"])
    model_cfg = dataclasses.replace(cfg.model, checkpoint=None, pretrained=False)
    model = build_model_from_config(model_cfg, meta.num_classes)
    model.load_state_dict(ckpt["model"])
    meta.input_size = [int(v) for v in cfg.data.crop_size]
    from segkd.export.graph import strip_training_modules

    return strip_training_modules(model), meta
