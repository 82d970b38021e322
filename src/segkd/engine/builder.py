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

from segkd.config_schema import DataConfig, ExperimentConfig, ModelConfig
from segkd.engine.distiller import Distiller, StepSettings, distill_spec, term_names
from segkd.engine.strong_view import StrongAugment
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
    unlabeled_set: Any = None  # the data.unlabeled pool; None: off, or built from the config when needed


def build_data(cfg: ExperimentConfig, need_train: bool = True) -> DataBundle:
    """Train (optional, with the ``data.unlabeled`` pool when set) and validation datasets of ``cfg.data``."""
    from segkd.data import build_dataset_from_config

    conv = cfg.model.input  # the student's input convention, applied by the data pipeline
    val_set = build_dataset_from_config(cfg.data, cfg.data.val_split, train=False, convention=conv)
    train_set = (build_dataset_from_config(cfg.data, cfg.data.train_split, train=True, convention=conv)
                 if need_train else None)
    ref = train_set if train_set is not None else val_set
    num_classes = dataset_num_classes(cfg, ref)
    data = DataBundle(
        train_set, val_set, num_classes, list(ref.class_names), ref.palette, getattr(ref, "ignore_index", 255)
    )
    if need_train:
        data.unlabeled_set = _unlabeled_set(data, cfg)
        if data.unlabeled_set is not None:  # a sample fully loaded before step 1 (segkd.data.preflight)
            from segkd.data.preflight import preflight

            preflight({"unlabeled": data.unlabeled_set}, tolerate=("unlabeled",) if cfg.data.skip_bad else ())
    return data


def dataset_num_classes(cfg: ExperimentConfig, dataset: Any) -> int:
    """The dataset's class count; ``model.num_classes``, when set, must be the same (one-line error)."""
    k = int(dataset.num_classes)
    if cfg.model.num_classes is not None and cfg.model.num_classes != k:
        raise ValueError(
            f"config: model.num_classes={cfg.model.num_classes} but the dataset (data.name={cfg.data.name}) "
            f"has {k} classes; set model.num_classes={k} or leave it out (it then follows the dataset)"
        )
    return k


def _unlabeled_set(data: DataBundle, cfg: ExperimentConfig) -> Any:
    """The unlabelled pool when ``cfg.data.unlabeled`` is set (checked): the bundle's, else built from
    the config (a bundle built without it, e.g. shared across runs); None when it is not set."""
    from segkd.data.mixed import build_unlabeled_dataset, check_unlabeled

    if check_unlabeled(cfg.data, cfg.distill.teacher is not None) is None:
        return None
    if data.unlabeled_set is not None:
        return data.unlabeled_set
    return build_unlabeled_dataset(cfg.data, data.class_names, cfg.model.input)


def build_train_iterator(
    data: DataBundle, cfg: ExperimentConfig, start_iter: int, iters: int | None = -1
) -> Any:
    """Iterator over this process's training batches from iteration ``start_iter`` on.

    ``iters``: iterations of the run (-1: ``train.iters``; None: endless, for a time budget).

    The data package's sampler makes the stream a pure function of (seed, batch index), so a run resumed
    at iteration ``k`` replays exactly the batches an uninterrupted run sees from ``k``.
    """
    from segkd.data import build_train_loader
    from segkd.data.mixed import build_mixed_train_loader, unlabeled_count

    per_iter = cfg.train.grad_accum  # batches of data.batch_size per process per iteration
    iters = cfg.train.iters if iters == -1 else iters
    total = None if iters is None else iters * per_iter * cfg.data.batch_size
    start = start_iter * per_iter
    train_set, unlabeled = data.train_set, _unlabeled_set(data, cfg)
    if cfg.distill.teacher is not None and cfg.distill.teacher.cache:
        from segkd.cache.attach import cached_train_set

        # Samples carry the teacher's maps from the cache, replayed through their augmentation.
        train_set = cached_train_set(train_set, cfg)
        if unlabeled is not None:
            unlabeled = cached_train_set(unlabeled, cfg, pool="unlabeled")
    if unlabeled is not None and cfg.data.unlabeled.pseudo_labels is not None:
        from segkd.cache.pseudo_labels import pseudo_labelled_pool

        unlabeled = pseudo_labelled_pool(unlabeled, cfg.data)  # predict, then train: the cache's labels
    if unlabeled is not None and unlabeled_count(cfg.data.unlabeled.ratio, cfg.data.batch_size) > 0:
        # Batches mixed with data.unlabeled images, flagged by batch["labeled"] (segkd.data.mixed).
        loader = build_mixed_train_loader(train_set, unlabeled, cfg.data, cfg.train.seed, total, start)
    else:
        loader = build_train_loader(
            train_set, cfg.data, seed=cfg.train.seed, total_samples=total, start_batch=start
        )
    return iter(loader)


def plain_batches(data: DataBundle, cfg: ExperimentConfig) -> Any:
    """An endless stream of labelled training batches as a baseline run draws them, on a seed of its own
    (the run's stream is untouched): what :func:`segkd.engine.budget.measure_student_step` times."""
    from segkd.data import build_train_loader

    return iter(build_train_loader(data.train_set, cfg.data, seed=cfg.train.seed + 7919, total_samples=None))


def build_val_loader_for(data: DataBundle, cfg: DataConfig) -> Any:
    """DDP-aware validation loader without duplicate samples, from the ``data`` section."""
    from segkd.data import build_val_loader

    return build_val_loader(data.val_set, cfg)


def build_student(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The trained segmentor from the ``model`` section (loads ``model.checkpoint`` if set)."""
    from segkd.models import build_model_from_config

    return build_model_from_config(cfg, num_classes)


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
            t, num_classes, class_names, cfg.model.output_stride, cfg.model.input
        )
        return teacher.requires_grad_(False).eval()

    if not cfg.distill.teacher.checkpoint and not cfg.distill.allow_untrained_teacher:
        raise ValueError(
            "config: distill.teacher.checkpoint is not set, so the teacher would be randomly initialised; "
            "set it to the trained teacher's weights (or distill.allow_untrained_teacher=true to opt in)"
        )
    teacher = build_model_from_config(cfg.distill.teacher, num_classes, key="distill.teacher")
    teacher.requires_grad_(False)
    return with_teacher_input(teacher, cfg).eval()


def with_teacher_input(teacher: nn.Module, cfg: ExperimentConfig) -> nn.Module:
    """``teacher`` as is when its input convention is the student's, else wrapped to convert the
    student's input first (:mod:`segkd.models.input_adapter`)."""
    from segkd.models.input_adapter import (
        ConvertedTeacher,
        converter,
        recorded_convention,
        teacher_convention,
    )

    assert cfg.distill.teacher is not None
    recorded = recorded_convention(getattr(teacher, "checkpoint_meta", None))
    convert = converter(cfg.model.input, teacher_convention(cfg.distill.teacher, cfg.model.input, recorded))
    return teacher if convert is None else ConvertedTeacher(teacher, convert)


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
    _check_unlabeled_terms(cfg, losses)
    settings = step_settings(cfg, device_type)
    distiller = Distiller(
        student, teacher, losses, weights, cfg.distill.aux_weight, ignore_index, settings, shared,
        student_view=StrongAugment(cfg.model.input) if cfg.distill.strong_augment else None,
    )
    if teacher is not None and cfg.distill.teacher is not None and cfg.distill.teacher.cache:
        from segkd.cache.attach import attach_to_distiller

        attach_to_distiller(distiller, cfg, teacher)  # checks the cache; terms read it instead of the teacher
    return distiller


def _check_unlabeled_terms(cfg: ExperimentConfig, losses: dict[str, Any]) -> None:
    """With ``data.unlabeled`` images in the batches, some term must learn from them (read no labels)."""
    from segkd.data.mixed import unlabeled_count

    unlabeled = cfg.data.unlabeled
    if unlabeled is None or unlabeled_count(unlabeled.ratio, cfg.data.batch_size) == 0:
        only_unlabelled = [name for name, loss in losses.items() if loss.routed_images() == "unlabeled"]
        if only_unlabelled or cfg.distill.strong_augment:
            what = f"term {only_unlabelled[0]!r} (images: unlabeled)" if only_unlabelled else (
                "distill.strong_augment")
            raise ValueError(
                f"config: {what} acts on unlabelled images, but no batch holds any: set data.unlabeled "
                "(root or split, ratio > 0 of the batch)"
                + (f", or {only_unlabelled[0]}'s option images: all" if only_unlabelled else "")
            )
        return
    if unlabeled.pseudo_labels is not None:
        return  # the pool is labelled by the cache's pseudo-labels: the CE learns from it
    if not any(not getattr(loss, "uses_labels", True) for loss in losses.values()):
        raise ValueError(
            f"config key 'data.unlabeled': every distill.losses term ({', '.join(losses) or 'none'}) reads "
            "labels, so the unlabelled images would teach nothing; add a label-free term (kd, dist, cwd, "
            "fitnet, at, skd_pairwise, skd_holistic, cirkd_batch_p2p, dsd, ka_*) or remove data.unlabeled"
        )


def step_settings(cfg: ExperimentConfig, device_type: str) -> StepSettings:
    """The step's precision, clipping and speed settings from ``cfg.train``."""
    t = cfg.train
    return StepSettings(t.amp, t.grad_clip, device_type, t.channels_last, t.teacher_inference,
                        t.compile_backend if t.compile else None)


def run_meta(cfg: ExperimentConfig, data: DataBundle) -> dict[str, Any]:
    """The checkpoint's ``meta``: what export / predict need to use the weights alone."""
    from segkd.input_convention import to_meta

    palette = data.palette.tolist() if hasattr(data.palette, "tolist") else list(data.palette)
    return {
        "model_name": cfg.model.name,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "mean": list(cfg.model.input.mean),  # kept for readers of checkpoints written before "input"
        "std": list(cfg.model.input.std),
        "input": to_meta(cfg.model.input),  # the student's input convention (segkd.input_convention)
        "palette": palette,
    }
