"""The distiller: a student, an optional frozen teacher and a dict of named, weighted loss terms.

One training step computes (CIRKD / SKD / KA total objective)

    total = CE(up(s.logits), y) + aux_weight * CE(up(s.aux_logits), y) + sum_i w_i * L_i(s, t, batch)

where ``up`` bilinearly upsamples (N, K, h, w) logits to the label size (H, W), CE ignores label 255,
``t`` is the teacher's :class:`SegOutput` computed once per step under ``torch.no_grad()`` and each
``L_i`` is a :class:`~segkd.losses.base.DistillLoss` built by name from ``distill.losses``. Without a
teacher only the task terms remain (plain supervised training), so a baseline, a teacher and every
distilled student run through the same loop.

Unlabelled images (``data.unlabeled``): a micro-batch may carry ``labeled`` (N,) bool. Student and teacher
run on all N images; CE, aux CE and every term with ``uses_labels = True`` (IFVD, the CIRKD memory terms,
KD with ``mask_ignore``) see the labelled images only; every label-free term (KD, DIST, CWD, FitNet, AT,
pair-wise, holistic and its adversary, CIRKD mini-batch, DSD, KA) sees all N; ``pseudo_label`` sees the
unlabelled ones (:mod:`segkd.engine.routing`). With ``distill.strong_augment`` the student sees a
photometrically noised copy of the unlabelled images, the teacher the clean ones (Noisy Student).
Without ``labeled`` (or all true) the step is exactly the labelled one.

The distiller is the algorithm: :meth:`Distiller.train_step` runs one whole training iteration (every
micro-batch's forward and backward under AMP, each adversary's update on the detached outputs, gradient
clipping, the student update and the LR schedules) with the optimizers it is given, keyed by role
(:mod:`segkd.engine.optim`). The trainer around it only loops, logs, validates and checkpoints.

The trainable part (student + loss-owned modules such as projection heads) lives in one module,
:class:`TrainableNet`, which is what DistributedDataParallel wraps; the frozen teacher is outside it, and
so, for DDP, are the discriminators and the terms' state buffers (see :meth:`Distiller.wrap_ddp`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from segkd.distributed import all_reduce, is_dist_initialized
from segkd.engine import speed
from segkd.engine.optim import ADVERSARY, STUDENT, Optimizers
from segkd.engine.routing import TermInputs, labelled_index, supervised_view
from segkd.engine.task import upsampled_ce
from segkd.labels import IGNORE_INDEX
from segkd.losses.base import DistillLoss, DistillSpec
from segkd.models.outputs import SegOutput


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or Inf; the message names the term and the iteration."""

    def __init__(self, term: str, iteration: int, value: float) -> None:
        super().__init__(
            f"loss term '{term}' is {value} at iteration {iteration}; stopping "
            "(the last good checkpoint is kept in checkpoints/latest.pt)"
        )
        self.term = term
        self.iteration = iteration


@dataclass
class StepSettings:
    """How the distiller runs a step: mixed precision (``none``, ``bf16``, ``fp16`` with a gradient
    scaler) on ``device_type`` and the student's gradient-norm clipping (0: off); the opt-in speed
    settings (:mod:`segkd.engine.speed`): ``channels_last`` memory format, the teacher under
    ``torch.inference_mode`` (``teacher_inference``), ``compile`` (a ``torch.compile`` backend, e.g.
    ``inductor``; None: eager)."""

    amp: str = "none"
    grad_clip: float = 0.0
    device_type: str = "cpu"
    channels_last: bool = False
    teacher_inference: bool = False
    compile: str | None = None


@dataclass
class StepResult:
    """Everything one forward of the distiller produced."""

    total: Tensor
    terms: dict[str, Tensor]
    student: SegOutput
    teacher: SegOutput | dict[str, SegOutput] | None  # per term when cached and live targets are mixed


class TrainableNet(nn.Module):
    """Student plus the loss terms (and their trainable modules): the part DDP wraps.

    ``forward(images, labels, teacher_out, labeled=None)`` returns ``(student_out, {name: unweighted
    term})``; ``labeled`` (N,) bool routes the images per term (:mod:`segkd.engine.routing`).
    """

    def __init__(
        self,
        student: nn.Module,
        losses: nn.ModuleDict,
        aux_weight: float,
        ignore_index: int,
        shared: nn.ModuleDict | None = None,
    ) -> None:
        super().__init__()
        self.student = student
        self.losses = losses
        self.shared = shared if shared is not None else nn.ModuleDict()
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index

    def forward(
        self,
        images: Tensor,
        labels: Tensor,
        teacher_out: SegOutput | dict[str, SegOutput] | None,
        labeled: Tensor | None = None,
    ) -> tuple[SegOutput, dict[str, Tensor]]:
        out = self.student(images)
        with speed.float32_losses(images) as cast:  # under AMP: terms in float32 (segkd.engine.speed)
            s_out = cast(out)
            if isinstance(teacher_out, dict):
                teacher_out = {key: cast(value) for key, value in teacher_out.items()}
            else:
                teacher_out = cast(teacher_out)
            index = labelled_index(labeled)
            logits, aux_logits, task_labels = supervised_view(s_out, labels, index, self.ignore_index)
            terms = {"ce": upsampled_ce(logits, task_labels, self.ignore_index)}
            if aux_logits is not None and self.aux_weight > 0:
                terms["aux_ce"] = upsampled_ce(aux_logits, task_labels, self.ignore_index)
            if teacher_out is not None:
                per_teacher: dict[int, TermInputs] = {}  # two teachers when cached and live terms are mixed
                for name, loss in self.losses.items():
                    teacher = teacher_for(teacher_out, name)
                    if id(teacher) not in per_teacher:
                        per_teacher[id(teacher)] = TermInputs(
                            s_out, teacher, images, labels, index, self.ignore_index
                        )
                    args = per_teacher[id(teacher)].for_term(loss)
                    value = loss(*args) if args is not None else out.logits.new_zeros(())  # no labelled image
                    terms.update(named_values(name, value))
        return out, terms


class Distiller(nn.Module):
    """Student, frozen teacher (always eval, no grad, BN statistics never updated) and weighted terms.

    Args:
        student: the trained segmentor.
        teacher: frozen segmentor or None (plain supervised training).
        losses: ``{term name: DistillLoss}`` in config order.
        weights: ``{term name: weight}`` from the config (``ce`` has weight 1, ``aux_ce`` aux_weight).
        aux_weight: weight of the auxiliary-head cross-entropy.
        student_view: ``view(images, labeled)``, the student's input when it differs from the teacher's
            (``distill.strong_augment``: :class:`segkd.engine.strong_view.StrongAugment`); training only.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        losses: dict[str, DistillLoss],
        weights: dict[str, float],
        aux_weight: float = 0.4,
        ignore_index: int = IGNORE_INDEX,
        settings: StepSettings | None = None,
        shared: nn.ModuleDict | None = None,
        student_view: Callable[[Tensor, Tensor | None], Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.student_view = student_view  # distill.strong_augment (segkd.engine.strong_view); None: off
        self.settings = settings or StepSettings()
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.settings.amp)
        self.scaler = torch.amp.GradScaler(self.settings.device_type, enabled=self.settings.amp == "fp16")
        if losses and teacher is None:
            raise ValueError("distill.losses are set but distill.teacher is missing")
        self.net = TrainableNet(student, nn.ModuleDict(losses), aux_weight, ignore_index, shared)
        _check_shared(losses, self.net.shared)
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
        self.weights = {"ce": 1.0, "aux_ce": aux_weight, **weights}
        self._runner: nn.Module = self.net  # DDP(self.net) once wrapped; not registered (keeps state keys)
        self.cache_terms: frozenset[str] = frozenset()  # terms reading a teacher cache (segkd.cache.attach)
        speed.apply_to_networks(self.settings, student, teacher)

    @property
    def student(self) -> nn.Module:
        return self.net.student

    @property
    def losses(self) -> nn.ModuleDict:
        return self.net.losses

    @property
    def shared(self) -> nn.ModuleDict:
        """Modules several terms use (CIRKD projector + queues, KA encoder), by name."""
        return self.net.shared

    def train(self, mode: bool = True) -> Distiller:
        """Switch student and losses; the teacher stays in eval mode whatever ``mode`` is."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def wrap_ddp(self, device_ids: list[int] | None = None) -> None:
        """Wrap the trainable part in DistributedDataParallel.

        DDP averages the gradients of the student and of the terms' student-side modules. It leaves out
        the discriminators (trained by :meth:`train_step` on their own, their gradients averaged there)
        and the terms' buffers (memory queues are kept identical on every rank by the terms themselves;
        broadcasting them every forward would only cost time). Every parameter DDP does see takes part in
        each forward, so ``find_unused_parameters`` is needed only for an aux head with weight 0.
        """
        ignored = self._ddp_ignored_names()
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.net, ignored)
        aux_unused = self.net.aux_weight <= 0 and getattr(self.student, "aux_head", None) is not None
        self._runner = nn.parallel.DistributedDataParallel(
            self.net, device_ids=device_ids, find_unused_parameters=aux_unused
        )

    def _ddp_ignored_names(self) -> list[str]:
        adversary = {id(p) for loss in self.losses.values() for p in loss.adversary_parameters()}
        names = [n for n, p in self.net.named_parameters() if id(p) in adversary]
        return names + [n for n, _ in self.net.named_buffers() if n.startswith(("losses.", "shared."))]

    def no_sync(self) -> Any:
        """Context skipping the DDP gradient all-reduce (gradient accumulation micro-steps)."""
        return self._runner.no_sync() if hasattr(self._runner, "no_sync") else nullcontext()

    @torch.no_grad()
    def teacher_forward(self, images: Tensor) -> SegOutput | None:
        """Teacher outputs under no_grad (None without a teacher). The eval-mode teacher skips its aux
        head; it is run on the stages when a term asks for it (``needs_teacher_aux``, DIST's aux term).
        With ``teacher_inference`` it runs under ``torch.inference_mode`` (:mod:`segkd.engine.speed`)."""
        if self.teacher is None:
            return None
        with speed.teacher_mode(self.settings):
            out = self.teacher(images)
            wants_aux = any(getattr(loss, "needs_teacher_aux", False) for loss in self.losses.values())
            aux_head = getattr(self.teacher, "aux_head", None)
            if wants_aux and out.aux_logits is None and aux_head is not None:
                out = replace(out, aux_logits=aux_head(out.stages[self.teacher.aux_index])[0])
        return speed.usable_outside(out, self.settings)

    def teacher_targets(
        self, images: Tensor, cached: dict[str, Tensor] | None = None
    ) -> SegOutput | dict[str, SegOutput] | None:
        """What the terms read as the teacher: the live teacher's outputs, or with a teacher cache
        (``cache_terms``) the batch's replayed ``cached`` maps; ``{term: outputs}`` when some terms read
        the cache and others the live teacher (run only then)."""
        if not self.cache_terms:
            return self.teacher_forward(images)
        if cached is None:
            raise ValueError("the distiller reads a teacher cache but the batch carries no cached maps")
        replayed = SegOutput(logits=cached.get("logits"), feat=cached.get("feat"),  # type: ignore[arg-type]
                             aux_logits=cached.get("aux_logits"))
        if len(self.cache_terms) == len(self.losses):
            return replayed
        live = self.teacher_forward(images)
        return {name: replayed if name in self.cache_terms else live for name in self.losses}

    def compute(
        self,
        images: Tensor,
        labels: Tensor,
        labeled: Tensor | None = None,
        cached: dict[str, Tensor] | None = None,
    ) -> StepResult:
        """One forward: teacher once under no_grad (or its cached maps), student, every named term and the
        weighted total.

        ``labeled`` (N,) bool: which images have labels (None: all); see the module docstring. ``cached``:
        the batch's replayed teacher maps (:func:`cached_maps`) when the distiller reads a teacher cache."""
        images = speed.input_format(images, self.settings)
        teacher_out = self.teacher_targets(images, cached)
        if self.student_view is not None and self.training:  # the student's noised view, teacher's clean
            images = self.student_view(images, labeled)
        student_out, terms = self._runner(images, labels, teacher_out, labeled)
        total = sum(self.weight_of(name) * value for name, value in terms.items())
        return StepResult(total=total, terms=terms, student=student_out, teacher=teacher_out)

    def weight_of(self, term: str) -> float:
        """The config weight of ``term``; a named value ``<term>.<key>`` carries its term's weight."""
        return self.weights[term] if term in self.weights else self.weights[term.split(".", 1)[0]]

    def forward(
        self, images: Tensor, labels: Tensor, labeled: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``(total, {term name: unweighted value})``."""
        result = self.compute(images, labels, labeled)
        return result.total, result.terms

    # ------------------------------------------------------------------------------ the training step
    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.settings.device_type, dtype=self.amp_dtype)

    @staticmethod
    def check_finite(terms: dict[str, Tensor], iteration: int) -> dict[str, float]:
        """Mean of each term over ranks; raise :class:`NonFiniteLossError` naming the first bad one."""
        names = list(terms)
        values = torch.stack([terms[n].detach().float() for n in names])
        all_reduce(values, "mean")
        logged = dict(zip(names, values.tolist()))
        for name, value in logged.items():
            if not torch.isfinite(torch.tensor(value)):
                raise NonFiniteLossError(name, iteration, value)
        return logged

    def train_step(
        self, micro_batches: list[dict[str, Tensor]], optimizers: Optimizers, iteration: int = 0
    ) -> dict[str, float]:
        """One training iteration; returns every term, averaged over micro-batches and ranks.

        ``micro_batches``: ``[{"image": (N, 3, H, W), "label": (N, H, W)}, ...]`` on the device (optionally
        with ``"labeled"`` (N,) bool, see the module docstring), one per gradient-accumulation step (DDP
        synchronises on the last one only). Order, as in the reference SKD/CIRKD code: student forward +
        backward of ``total / len(micro_batches)`` for each micro-batch; then each adversary's update on
        the last micro-batch's detached outputs; then gradient clipping and the student update; every
        role's LR schedule advances once.
        """
        student = optimizers[STUDENT]
        student.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for index, batch in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            with self.no_sync() if not last else nullcontext():
                with self._autocast():
                    result = self.compute(batch["image"], batch["label"], batch.get("labeled"),
                                          cached_maps(batch))
                logged = self.check_finite({**result.terms, "total": result.total}, iteration)
                self.scaler.scale(result.total / len(micro_batches)).backward()
            for key, value in logged.items():
                sums[key] = sums.get(key, 0.0) + value / len(micro_batches)
        sums.update(self._adversary_steps(result, micro_batches[-1], optimizers, iteration))
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(student.optimizer)
            params = [p for group in student.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.settings.grad_clip)
        student.step(self.scaler)
        self.scaler.update()
        return sums

    def _adversary_steps(
        self, result: StepResult, batch: dict[str, Tensor], optimizers: Optimizers, iteration: int
    ) -> dict[str, float]:
        """Each discriminator's update on the detached student outputs; gradients averaged over ranks
        here, since discriminators are outside the student's DDP (:meth:`wrap_ddp`)."""
        logged: dict[str, float] = {}
        index = labelled_index(batch.get("labeled"))
        student = result.student.detached()
        for name, loss in self.adversarial_losses().items():
            teacher = teacher_for(result.teacher, name)
            images, labels = batch["image"], batch["label"]
            inputs = TermInputs(student, teacher, images, labels, index, self.net.ignore_index)
            args = inputs.for_term(loss)  # skd_holistic is label-free: all images
            if args is None:
                continue
            role = optimizers[ADVERSARY + name]
            role.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                out = loss.adversary_step(*args)
            logged.update(self.check_finite({f"{name}/{k}": v for k, v in out.items()}, iteration))
            out["loss"].backward()
            if is_dist_initialized():
                for p in loss.adversary_parameters():
                    if p.grad is not None:
                        all_reduce(p.grad, "mean")
            role.step()
        return logged

    def student_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the student optimizer besides the student's: the terms' trainable modules (not
        adversaries) and the trainable shared modules (CIRKD's projector)."""
        for loss in self.losses.values():
            yield from (p for p in loss.student_parameters() if p.requires_grad)
        yield from (p for p in self.shared.parameters() if p.requires_grad)

    def adversarial_losses(self) -> dict[str, DistillLoss]:
        """Terms that own an adversary (a discriminator with its own optimizer)."""
        return {n: loss for n, loss in self.losses.items() if loss.adversary_parameters()}


def teacher_for(teacher_out: SegOutput | dict[str, SegOutput] | None, term: str) -> SegOutput | None:
    """The teacher outputs term ``term`` reads (``teacher_out`` is per term in a mixed cached/live run)."""
    return teacher_out[term] if isinstance(teacher_out, dict) else teacher_out


def cached_maps(batch: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """The replayed teacher maps a batch carries (``"teacher.<key>"`` entries, :mod:`segkd.cache`)."""
    maps = {key[len("teacher."):]: value for key, value in batch.items() if key.startswith("teacher.")}
    return maps or None


def named_values(name: str, value: Tensor | dict[str, Tensor]) -> dict[str, Tensor]:
    """A term's output as logged terms: a scalar under its name, several named values as ``name.key``."""
    if isinstance(value, dict):
        return {f"{name}.{key}": v for key, v in value.items()}
    return {name: value}


def _check_shared(losses: dict[str, DistillLoss], shared: nn.ModuleDict) -> None:
    """Every shared module a term uses must be given to the distiller (else it would not be trained,
    moved to the device or checkpointed)."""
    owned = {id(m) for m in shared.values()}
    for name, loss in losses.items():
        if any(id(m) not in owned for m in loss.shared_references()):
            raise ValueError(
                f"term '{name}' uses a shared module the distiller was not given: pass "
                "shared=spec.shared.modules of the DistillSpec the terms were built with"
            )


def distill_spec(
    student: nn.Module, teacher: nn.Module, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> DistillSpec:
    """Shapes the losses need, read from the two segmentors' attributes."""
    return DistillSpec(
        num_classes=num_classes,
        student_feat_channels=student.feat_channels,
        teacher_feat_channels=teacher.feat_channels,
        student_stage_channels=list(student.stage_channels),
        teacher_stage_channels=list(teacher.stage_channels),
        ignore_index=ignore_index,
    )


def term_names(loss_names: list[str]) -> list[str]:
    """Unique term names for the configured losses (label or loss name), ``_2``, ``_3`` on repeats."""
    seen: dict[str, int] = {}
    names = []
    for name in loss_names:
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return names
