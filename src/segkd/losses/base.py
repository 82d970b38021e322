"""Contract between the training engine and every distillation loss.

A distillation term is an ``nn.Module`` registered in :data:`LOSSES` and built from config data as
``LOSSES.build(name, spec=DistillSpec(...), **options)``. Its weight lives in the config
(``distill.losses[i].weight``) and is applied by the engine, never inside the loss.

Forward contract: ``loss(student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor`` (a
scalar), or ``dict[str, Tensor]`` for a term that computes several named values at once (logged as
``<term>.<key>``, each weighted by the term's config weight). The teacher's outputs are computed once
per step under ``torch.no_grad()`` and shared by all terms. Extra trainable modules (projection heads,
adapters) are sub-modules of the loss; they are optimised with the student and saved in checkpoints
through the loss's ``state_dict``. Stateful losses keep their state (memory queues) in registered
buffers; modules several terms use belong to the distiller (:class:`SharedModules`).

Adversarial terms additionally own a discriminator trained by its own optimizer: they override
:meth:`DistillLoss.adversary_parameters`, :meth:`DistillLoss.adversary_optim_defaults` (the published
optimizer settings of their variant; the engine builds the optimizer with every other one, from
``distill.adversary_optim``) and :meth:`DistillLoss.adversary_step`; the distiller's training step runs
``adversary_step`` before each student update.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from segkd.labels import IGNORE_INDEX
from segkd.models.outputs import SegOutput
from segkd.registry import Registry


class SharedModules:
    """Modules that several terms of one distiller use: CIRKD's projector and queues (p2p and p2r), KA's
    frozen encoder (adaptation and affinity).

    The first term that asks creates the module (:meth:`find_or_create`); the distiller owns
    them as its named member ``shared`` (state dict keys ``shared.<name>.*``: trained with the student
    when trainable, checkpointed once), and the terms keep plain references to them, never sub-modules.
    """

    def __init__(self) -> None:
        self.modules = nn.ModuleDict()

    def find_or_create(self, base: str, same: Any, factory: Any) -> nn.Module:
        """The first module for which ``same(module)`` is true, else ``factory()`` registered as ``base``
        (``base_2``, ``base_3`` ... when that name is taken, e.g. a second set of memory options)."""
        for module in self.modules.values():
            if same(module):
                return module
        name, n = base, 1
        while name in self.modules:
            n += 1
            name = f"{base}_{n}"
        self.modules[name] = factory()
        return self.modules[name]


@dataclass
class DistillSpec:
    """Shapes a loss needs to build its own modules (projection heads, adapters, discriminator), and the
    distiller's :class:`SharedModules` through which terms share modules."""

    num_classes: int
    student_feat_channels: int
    teacher_feat_channels: int
    student_stage_channels: list[int] = field(default_factory=list)
    teacher_stage_channels: list[int] = field(default_factory=list)
    ignore_index: int = IGNORE_INDEX
    image_channels: int = 3
    shared: SharedModules = field(default_factory=SharedModules)


@dataclass
class DistillBatch:
    """The inputs of one training step, as the losses see them.

    Attributes:
        images: normalised input images, (N, 3, H, W).
        labels: ground-truth class ids, (N, H, W), ``ignore_index`` for unlabelled pixels.
        memo: results several terms of this one forward share (a shared module's per-step output, e.g.
            CIRKD's projected anchors and sampled contrast sets): a fresh dict for every forward.
        labelled_images: how many images of the whole micro-batch are labelled (set by
            :mod:`segkd.engine.routing`; None: every image of this batch is), for a term weighted per
            labelled image (``pseudo_label`` with ``normalize: labeled``).
    """

    images: Tensor
    labels: Tensor
    memo: dict[str, Any] = field(default_factory=dict)
    labelled_images: int | None = None


class DistillLoss(nn.Module):
    """Base class of every distillation term (see the module docstring for the contract).

    ``uses_labels``: whether the term reads ``batch.labels``. With unlabelled images in the batch
    (``data.unlabeled``) a term that does gets the labelled images only, one that does not gets them all
    (:mod:`segkd.engine.routing`). Every registered term sets it; the default (True) is the safe one for
    a term that does not say.
    """

    uses_labels: bool = True

    def routed_images(self) -> str:
        """Which images of a batch with unlabelled ones the term sees (:mod:`segkd.engine.routing`):
        ``"labeled"`` for a term that reads labels, ``"all"`` for one that does not; a term that learns from
        the unlabelled images only (``pseudo_label``) says ``"unlabeled"``."""
        return "labeled" if self.uses_labels else "all"

    def forward(
        self, student: SegOutput, teacher: SegOutput, batch: DistillBatch
    ) -> Tensor | dict[str, Tensor]:
        raise NotImplementedError

    def student_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters trained together with the student (default: all but the adversary's)."""
        adversary = {id(p) for p in self.adversary_parameters()}
        return (p for p in self.parameters() if id(p) not in adversary)

    def shared_references(self) -> list[nn.Module]:
        """The distiller's shared modules this term uses (held by reference, see :class:`SharedModules`)."""
        return []

    def adversary_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the term's own optimizer (a discriminator); none by default."""
        return []

    def adversary_optim_defaults(self) -> dict[str, Any]:
        """Published optimizer settings of the adversary (keys of
        :class:`~segkd.config_schema.AdversaryOptimConfig`); only adversarial terms have them."""
        raise NotImplementedError(f"{type(self).__name__} has no adversary")

    def adversary_step(
        self, student: SegOutput, teacher: SegOutput, batch: DistillBatch
    ) -> dict[str, Tensor]:
        """Compute the adversary's loss (its backward and optimizer step are run by the engine).

        Returns a dict with key ``"loss"`` (scalar to minimise) plus any terms to log; empty when the
        term has no adversary.
        """
        return {}

    def teacher_reads(self) -> frozenset[str] | None:
        """The teacher outputs this term reads (:class:`SegOutput` field names among ``logits``, ``feat``,
        ``aux_logits``), which a teacher cache (:mod:`segkd.cache`) stores and replays through the
        augmentation; ``None`` (the default): the term needs the live teacher, with the reason in
        :attr:`live_teacher_reason`."""
        return None

    live_teacher_reason: str = "it reads teacher outputs a teacher cache does not hold"


LOSSES: Registry[DistillLoss] = Registry("loss")
