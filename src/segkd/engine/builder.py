"""Build what a training run needs from its config: data, student, teacher, distiller (optimizers:
:mod:`segkd.engine.optim`).

Kept apart from the loop (:mod:`segkd.engine.trainer`) so that every piece can be built and tested
alone, and so that a new distillation method needs no change here: loss terms are built by name from
``distill.losses`` through the ``LOSSES`` registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from segkd.config_schema import ExperimentConfig
from segkd.engine.distiller import Distiller, StepSettings, distill_spec, term_names
from segkd.labels import IGNORE_INDEX


@dataclass
class DataBundle:
    """Datasets and the facts about them the engine needs."""

    train_set: Any
    val_set: Any
    num_classes: int
    class_names: list[str]
    palette: Any
    ignore_index: int


def build_data(cfg: ExperimentConfig, need_train: bool = True) -> DataBundle:
    """Train (optional) and validation datasets from ``cfg.data``."""
    from segkd.data import build_dataset_from_config

    val_set = build_dataset_from_config(cfg.data, cfg.data.val_split, train=False)
    train_set = build_dataset_from_config(cfg.data, cfg.data.train_split, train=True) if need_train else None
    ref = train_set if train_set is not None else val_set
    num_classes = cfg.model.num_classes or ref.num_classes
    return DataBundle(
        train_set, val_set, num_classes, list(ref.class_names), ref.palette, getattr(ref, "ignore_index", 255)
    )


def build_train_iterator(data: DataBundle, cfg: ExperimentConfig, start_iter: int) -> Any:
    """Iterator over this process's training batches from iteration ``start_iter`` on.

    The data package's sampler makes the stream a pure function of (seed, batch index), so a run resumed
    at iteration ``k`` replays exactly the batches an uninterrupted run sees from ``k``.
    """
    from segkd.data import build_train_loader

    per_iter = cfg.train.grad_accum  # batches of data.batch_size per process per iteration
    loader = build_train_loader(
        data.train_set,
        cfg.data,
        seed=cfg.train.seed,
        total_samples=cfg.train.iters * per_iter * cfg.data.batch_size,
        start_batch=start_iter * per_iter,
    )
    return iter(loader)


def build_val_loader_for(data: DataBundle, cfg: ExperimentConfig) -> Any:
    """DDP-aware validation loader without duplicate samples."""
    from segkd.data import build_val_loader

    return build_val_loader(data.val_set, cfg.data)


def build_student(cfg: ExperimentConfig, num_classes: int) -> nn.Module:
    """The trained segmentor from ``cfg.model`` (loads ``model.checkpoint`` if set)."""
    from segkd.models import build_model_from_config

    return build_model_from_config(cfg.model, num_classes)


def build_teacher(
    cfg: ExperimentConfig, num_classes: int, class_names: list[str] | None = None
) -> nn.Module | None:
    """The frozen teacher from ``cfg.distill.teacher`` (None for plain supervised training).

    Other sources (mmseg, huggingface, torchvision) and hooked features go through
    :func:`segkd.models.external.build_external_teacher`; ``class_names`` are the dataset's.
    """
    if cfg.distill.teacher is None:
        return None
    from segkd.models import build_model_from_config
    from segkd.models.external import build_external_teacher, needs_adapter

    t = cfg.distill.teacher
    if needs_adapter(t):
        teacher = build_external_teacher(
            t, num_classes, class_names, cfg.model.output_stride, cfg.data.mean, cfg.data.std
        )
        return teacher.requires_grad_(False).eval()

    if not cfg.distill.teacher.checkpoint and not cfg.distill.allow_untrained_teacher:
        raise ValueError(
            "config: distill.teacher.checkpoint is not set, so the teacher would be randomly initialised; "
            "set it to the trained teacher's weights (or distill.allow_untrained_teacher=true to opt in)"
        )
    teacher = build_model_from_config(cfg.distill.teacher, num_classes)
    teacher.requires_grad_(False)
    return teacher.eval()


def build_distiller(
    cfg: ExperimentConfig,
    student: nn.Module,
    teacher: nn.Module | None,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    device_type: str = "cpu",
) -> Distiller:
    """Distiller with every configured loss term built by name from the ``LOSSES`` registry, running its
    step with the run's AMP and clipping settings on ``device_type``."""
    from segkd.losses import build_loss

    losses, weights, shared = {}, {}, None
    if cfg.distill.losses:
        if teacher is None:
            raise ValueError("config: distill.losses is set but distill.teacher is missing")
        spec = distill_spec(student, teacher, num_classes, ignore_index)
        names = term_names([t.label or t.name for t in cfg.distill.losses])
        for name, term in zip(names, cfg.distill.losses):
            losses[name] = build_loss(term.name, spec, **term.options)
            weights[name] = term.weight
        shared = spec.shared.modules
    settings = step_settings(cfg, device_type)
    return Distiller(
        student, teacher, losses, weights, cfg.distill.aux_weight, ignore_index, settings, shared
    )


def step_settings(cfg: ExperimentConfig, device_type: str) -> StepSettings:
    """The step's precision, clipping and speed settings from ``cfg.train``."""
    t = cfg.train
    return StepSettings(t.amp, t.grad_clip, device_type, t.channels_last, t.teacher_inference,
                        t.compile_backend if t.compile else None)


def run_meta(cfg: ExperimentConfig, data: DataBundle) -> dict[str, Any]:
    """The checkpoint's ``meta``: what export / predict need to use the weights alone."""
    palette = data.palette.tolist() if hasattr(data.palette, "tolist") else list(data.palette)
    return {
        "model_name": cfg.model.name,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
        "palette": palette,
    }
