"""Typed schema of every segkd config: plain dataclasses with defaults in code.

A YAML file holds plain data that mirrors these classes; :mod:`segkd.config` validates it against them,
applies ``key.sub=value`` overrides and saves the resolved result next to each run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB in [0, 1]: torchvision's / timm's ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class InputConfig:
    """How a network's input tensor is made from an 8-bit image (its *input convention*).

    Per pixel and channel c: ``x[c] = (v[c] - mean[c]) / std[c]`` with ``v`` the image's channels in
    ``channel_order`` (``rgb``: R, G, B; ``bgr``: B, G, R, as OpenCV reads files) scaled to
    ``[0, pixel_max]`` (1: ``u / 255``; 255: the 8-bit values as read). ``mean`` / ``std`` are listed in
    ``channel_order``. The default is torchvision's / timm's ImageNet convention; the CIRKD, DIST and
    official SKD training code reads images with OpenCV and feeds ``bgr``, ``pixel_max: 255``,
    ``mean: [104.00698793, 116.66876762, 122.67891434]``, ``std: [1, 1, 1]`` (their ``dataset/*.py``).
    """

    channel_order: Literal["rgb", "bgr"] = "rgb"
    pixel_max: float = 1.0  # 1 or 255
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))

    def __post_init__(self) -> None:
        if self.pixel_max not in (1.0, 255.0):
            raise ValueError(f"config key 'input.pixel_max': must be 1 or 255, got {self.pixel_max}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"config keys 'input.mean' / 'input.std': need 3 values each, got "
                             f"{list(self.mean)} / {list(self.std)}")
        if min(self.std) <= 0:
            raise ValueError(f"config key 'input.std': values must be > 0, got {list(self.std)}")


@dataclass
class ModelConfig:
    """A segmentation network, built by :func:`segkd.models.build_model`."""

    name: str = "deeplabv3_resnet18"
    num_classes: int | None = None  # None: taken from the dataset
    pretrained: bool | str = False  # True: timm's hub weights; a path: local ImageNet backbone checkpoint
    checkpoint: str | None = None  # whole-segmentor weights (segkd or reference-code layout)
    checkpoint_format: Literal["auto", "segkd", "cirkd", "authors"] = "auto"  # authors: ESPNet / LightNet
    output_stride: int = 8
    head_channels: int | None = None  # None: the architecture's published width
    aux: bool = True  # FCN auxiliary head on the third stage (training only)
    options: dict[str, Any] = field(default_factory=dict)  # passed to the model factory
    # The input convention the network is trained with / expects; for the student the data pipeline
    # applies it (recorded in checkpoints' meta and exported metadata).
    input: InputConfig = field(default_factory=InputConfig)


@dataclass
class UnlabeledConfig:
    """Images without labels mixed into every training batch; the teacher provides their targets.

    Exactly one source: ``split`` (a split of ``data.name`` at ``data.root`` whose labels are never read,
    e.g. ``unlabeled`` for the synthetic scenes) or ``root`` (a folder of images, searched at any depth).
    ``floor(ratio * data.batch_size)`` images of each per-process batch come from this pool, the rest
    from ``data.train_split``; label-reading terms and the CE see the labelled ones only
    (:mod:`segkd.engine.routing`). ``options`` are merged over ``data.options`` for a ``split`` pool
    (e.g. ``{num_samples: 2000}`` for the synthetic one).

    ``pseudo_labels``: a teacher cache of this pool (``segkd cache-teacher``, with ``logits``) whose arg-max
    labels train the pool's images as ordinary labels, with no teacher in the run: "predict, then train"
    (:mod:`segkd.cache.pseudo_labels`). The run has no ``distill`` section; its step is a plain one.
    """

    split: str | None = None
    root: str | None = None
    ratio: float = 0.5
    options: dict[str, Any] = field(default_factory=dict)
    pseudo_labels: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"config key 'data.unlabeled.ratio': must be in [0, 1), got {self.ratio}")
        if self.split is not None and self.root is not None:
            raise ValueError(
                "config keys 'data.unlabeled.split' and 'data.unlabeled.root': set one, not both"
            )


@dataclass
class DataConfig:
    """Dataset, augmentation and loader settings."""

    name: str = "synthetic"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    crop_size: list[int] = field(default_factory=lambda: [128, 128])  # H, W
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    # 0: the random scale is uniform over scale_range; > 0: drawn from the grid low, low + step, ..., high
    # (CIRKD / DIST: 0.5 + randint(0, 15) / 10, i.e. step 0.1 over [0.5, 2.0]; official SKD: [0.7, 2.1]).
    scale_step: float = 0.0
    flip: bool = True
    color_jitter: float = 0.0  # strength of brightness/contrast/saturation jitter; 0 disables
    # Before model.input existed these held the student's normalisation (RGB in [0, 1]); a config that
    # still sets them has them moved into model.input (ExperimentConfig), so old runs' configs load.
    mean: list[float] | None = None
    std: list[float] | None = None
    batch_size: int = 8  # per process
    val_batch_size: int = 1
    workers: int = 2
    prefetch_factor: int = 4  # batches each worker loads ahead (torch's default is 2); ignored with 0 workers
    options: dict[str, Any] = field(default_factory=dict)  # dataset-specific, e.g. synthetic size/count
    unlabeled: UnlabeledConfig | None = None  # None: off (every training image is labelled)
    # A training pair that cannot be read (damaged file, label value outside the classes): False stops the
    # run, saving a resumable latest.pt first; True replaces it by the next readable pair with a warning
    # naming the file (log.jsonl event "skipped", summary.json "skipped"); the data check's problems in
    # the training split then only warn.
    skip_bad: bool = False


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule of the trained network (and its loss-owned modules)."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    poly_power: float = 0.9
    # LR floor of the poly decay: lr(i) = min_lr + (lr - min_lr) * poly(i) (DIST's segmentation training
    # uses 1e-4); 0: plain poly. Scales with head_lr_mult like lr.
    min_lr: float = 0.0
    warmup_iters: int = 0
    warmup_ratio: float = 0.1  # LR at iteration 0 of the warm-up, as a fraction of lr
    head_lr_mult: float = 1.0  # LR multiplier for everything but the backbone


@dataclass
class TrainConfig:
    """Iteration-based training loop settings."""

    stage: Literal["main", "ka_autoencoder"] = "main"  # ka_autoencoder: Knowledge Adaptation stage 1
    iters: int = 1000
    # Budget (segkd.engine.budget): 0 trains train.iters iterations; > 0 trains until this many
    # budget_unit are spent (iters, seconds of training steps, or student_steps: seconds / measured cost
    # of one plain student step); the LR schedule runs over it and it is saved in checkpoints.
    budget: float = 0.0
    budget_unit: Literal["iters", "seconds", "student_steps"] = "student_steps"
    # Seconds charged to a time budget before the first step: work done for this run beforehand (e.g. a
    # teacher cache's one-off cost, charged by segkd compare --cache-cost charge).
    budget_precharge_s: float = 0.0
    # Seconds of one plain student step for a student_steps budget; 0: measured at the start of the run.
    # segkd compare --time-by clock sets it to the same seed's baseline run's seconds per iteration.
    budget_student_step_s: float = 0.0
    log_interval: int = 10
    val_interval: int = 0  # 0: validate only at the end
    ckpt_interval: int = 0  # 0: checkpoint only at validation points and the end
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False  # NHWC student/teacher/images (segkd.engine.speed)
    teacher_inference: bool = False  # teacher forward under torch.inference_mode instead of no_grad
    compile: bool = False  # torch.compile student and teacher forward (backend: compile_backend)
    compile_backend: str = "inductor"
    grad_accum: int = 1
    grad_clip: float = 0.0  # 0 disables
    seed: int = 0
    deterministic: bool = False  # deterministic kernels; with threads fixed, a CPU run repeats exactly
    threads: int = 0  # intra-op CPU threads (torch.set_num_threads); 0: PyTorch's default (cores)
    resume: str | None = None  # None, "auto" (latest in output_dir) or a checkpoint path
    device: str = "auto"  # auto, cpu, cuda, cuda:N


@dataclass
class EvalConfig:
    """Evaluation settings; mode ``whole``, ``slide`` (sliding window) or ``multiscale``."""

    mode: Literal["whole", "slide", "multiscale"] = "whole"
    # The split ``segkd eval`` scores (None: data.val_split, which validation during training always
    # uses); e.g. CamVid's published numbers are on ``test`` with the checkpoint best on ``val``.
    split: str | None = None
    crop_size: list[int] = field(default_factory=lambda: [512, 1024])
    stride: list[int] = field(default_factory=lambda: [341, 683])
    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: bool = False
    checkpoint: str | None = None
    num_visualize: int = 4
    max_images: int = 0  # 0: the whole split


@dataclass
class LossTermConfig:
    """One distillation term: ``total += weight * LOSSES[name](**options)(...)``."""

    name: str = "kd"
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # name the term is logged and checkpointed under (default: name); must be unique


@dataclass
class AdversaryOptimConfig:
    """Optimizer of every adversarial term's discriminator, built with the student's in one place
    (:func:`segkd.engine.optim.build_optimizers`). ``None`` keeps the published recipe of the term's
    variant (``skd_holistic``: hinge -> Adam 4e-4, betas 0.9/0.99, constant LR (CIRKD); wgan-gp -> SGD 4e-4,
    momentum 0.9, weight decay 5e-4, poly 0.9 (official SKD))."""

    name: Literal["sgd", "adam"] | None = None
    lr: float | None = None
    momentum: float | None = None
    betas: list[float] | None = None
    weight_decay: float | None = None
    poly_power: float | None = None  # 0: constant LR


@dataclass
class TeacherConfig(ModelConfig):
    """The frozen teacher: a segkd model (``source: segkd``) or one from another toolkit.

    ``source`` mmseg / huggingface / torchvision: see :mod:`segkd.models.external` (``name`` is the
    architecture or, for Hugging Face, a local folder or hub id; ``checkpoint`` the weights file).
    """

    source: Literal["segkd", "mmseg", "huggingface", "torchvision"] = "segkd"
    feat_module: str | None = None  # module whose output (``NAME:input``: input) is ``feat``; None: default
    class_map: dict[str, Any] | None = None  # {dataset class: teacher class (name / index) or a list}
    class_names: list[str] | None = None  # the teacher's classes when its weights do not say
    # The teacher's input convention; None: the source's (segkd: the student's model.input; huggingface:
    # its preprocessor's mean/std; mmseg, torchvision: ImageNet RGB). When it differs from the student's,
    # the teacher converts the student's input (segkd.input_convention.InputConversion).
    input: InputConfig | None = None
    input_mean: list[float] | None = None  # shorthand for input: {mean: ...} (RGB in [0, 1])
    input_std: list[float] | None = None  # shorthand for input: {std: ...} (RGB in [0, 1])
    # Teacher cache (segkd.cache, ``segkd cache-teacher``): the folder of the teacher's stored outputs, which
    # terms that can (``teacher_reads``) read, replayed through each crop's augmentation, instead of running
    # the teacher. ``cache_mixed``: terms that need the live teacher run it (else the cache refuses them).
    cache: str | None = None
    cache_mixed: bool = False

    def __post_init__(self) -> None:
        if self.input is not None and (self.input_mean is not None or self.input_std is not None):
            raise ValueError("config keys 'distill.teacher.input' and 'distill.teacher.input_mean' / "
                             "'input_std': set input only")


@dataclass
class DistillConfig:
    """The loss: task terms' weight and distillation terms; no teacher means plain supervised training.

    total = CE + ``aux_weight`` * aux-head CE + sum of ``losses[i].weight`` * term i.
    """

    aux_weight: float = 0.4  # FCN auxiliary head's CE (training only; 0.4 in CIRKD / SKD / mmseg)
    teacher: TeacherConfig | None = None
    losses: list[LossTermConfig] = field(default_factory=list)
    adversary_optim: AdversaryOptimConfig = field(default_factory=AdversaryOptimConfig)
    allow_untrained_teacher: bool = False  # else a teacher without a checkpoint is an error
    # Noisy Student's noise on the student's view of the unlabelled images (segkd.engine.strong_view):
    # colour jitter, grayscale and blur on the student's input; the teacher sees the clean image.
    strong_augment: bool = False


@dataclass
class StageConfig:
    """One stage of a multi-stage recipe (e.g. Knowledge Adaptation: auto-encoder, then distillation).

    Its ``data`` / ``train`` / ``optim`` / ``distill`` mappings are merged over the recipe's own sections (and
    validated) before the stage runs, in ``output_dir/<name>``. A loss option written ``AUTOENCODER`` is
    replaced by the auto-encoder file of the recipe's ``train.stage: ka_autoencoder`` stage.
    """

    name: str = "stage"
    data: dict[str, Any] = field(default_factory=dict)  # e.g. the stage's own batch_size
    train: dict[str, Any] = field(default_factory=dict)
    optim: dict[str, Any] = field(default_factory=dict)
    distill: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """The root of a config file."""

    name: str = "experiment"
    output_dir: str = "runs/experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    stages: list[StageConfig] = field(default_factory=list)  # empty: one stage, this config as it is

    def __post_init__(self) -> None:
        """Move a legacy ``data.mean`` / ``data.std`` (configs written before ``model.input``) into the
        student's input convention, whose channel order and scale they always had (RGB in [0, 1])."""
        data, model = self.data, self.model
        if data.mean is None and data.std is None:
            return
        if model.input != InputConfig():
            raise ValueError("config keys 'data.mean' / 'data.std' (the old spelling) and 'model.input' are "
                             "both set: set model.input only")
        default = InputConfig()
        model.input = InputConfig(mean=list(data.mean or default.mean), std=list(data.std or default.std))
        data.mean = data.std = None
