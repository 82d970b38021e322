"""How long a run trains: a number of iterations, wall-clock seconds, or student-step equivalents.

Equal iterations are not equal cost: a distilled step also runs the teacher (and its terms), so an
iteration-matched comparison gives the distilled student more compute than the baseline (Ali, Laube et
al. 2026, "The Surprising Effectiveness of Canonical Knowledge Distillation for Semantic Segmentation",
arXiv 2604.25530). A :class:`Budget` measures what a run has spent:

- ``iters``: iterations (``train.iters``, the default);
- ``seconds``: wall-clock seconds of training steps (validation and checkpoints are not charged);
- ``student_steps``: those seconds divided by the measured cost of one *plain student step* (a baseline
  iteration: the next labelled batch of the run's data pipeline, forward, cross-entropy, backward and
  optimizer update, timed at the start of the run on a copy of the student), so that a budget means the
  same on every machine:
  ``train.budget=2000 train.budget_unit=student_steps`` gives a distilled run the wall-clock time in which
  the baseline does 2000 iterations, on a laptop as on a GPU node.

The learning-rate schedule runs over the budget (``progress`` in [0, 1], see
:mod:`segkd.schedule`). ``spent`` and the measured student-step cost go into every checkpoint, so
a resumed run continues the same budget. Under ``torch.distributed`` every rank charges the slowest
rank's step time, so all ranks stop after the same iteration.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from segkd.distributed import all_reduce, is_dist_initialized
from segkd.engine.clock import StepClock
from segkd.engine.task import upsampled_ce

UNITS = ("iters", "seconds", "student_steps")


@dataclass
class Budget:
    """What a run may spend and has spent.

    Attributes:
        unit: ``iters``, ``seconds`` or ``student_steps``.
        total: the budget in ``unit``.
        spent_s: seconds of training steps charged so far (all units record it).
        iterations: iterations charged so far.
        student_step_s: measured seconds of one plain student step (``student_steps`` only).
        key: the config key ``total`` came from, named in errors (``train.budget`` or ``train.iters``).
    """

    unit: str
    total: float
    spent_s: float = 0.0
    iterations: int = 0
    student_step_s: float | None = None
    device: torch.device | None = None  # of the ranks' collective (NCCL needs CUDA tensors); not saved
    key: str = field(default="train.budget", repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            units = ", ".join(UNITS)
            raise ValueError(f"config key 'train.budget_unit': {self.unit!r} is not one of {units}")
        if self.total <= 0:
            raise ValueError(f"config key '{self.key}': must be positive, got {self.total:g}")
        self._clock: StepClock | None = None

    @classmethod
    def from_config(cls, train: Any) -> Budget:
        """The budget of a ``train`` config section: ``train.iters`` iterations when ``train.budget`` is 0,
        else ``train.budget`` in ``train.budget_unit``."""
        if train.budget <= 0:
            return cls("iters", train.iters, key="train.iters")
        return cls(train.budget_unit, train.budget)

    @property
    def spent(self) -> float:
        """Spent budget in ``unit``; during a step, includes the step's elapsed time so far."""
        if self.unit == "iters":
            return float(self.iterations)
        seconds = self.spent_s + (self._clock.elapsed() if self._clock is not None else 0.0)
        if self.unit == "seconds":
            return seconds
        if not self.student_step_s:
            raise RuntimeError("budget in student_steps used before the student step was measured")
        return seconds / self.student_step_s

    def progress(self) -> float:
        """Fraction of the budget spent, clamped to [0, 1] (what the LR schedule reads)."""
        return min(max(self.spent / self.total, 0.0), 1.0)

    def exhausted(self) -> bool:
        return self.spent >= self.total

    def start_step(self) -> None:
        """Start the clock of one training step (its time counts in :meth:`progress` while it runs)."""
        if self._clock is None or self._clock.device != torch.device(self.device or "cpu"):
            self._clock = StepClock(self.device)
        self._clock.start()

    def end_step(self) -> float:
        """Stop the clock and charge the step: the slowest rank's seconds under torch.distributed.

        Returns the charged seconds (on CUDA timed with events, :class:`~segkd.engine.clock.StepClock`)."""
        seconds = self._clock.stop() if self._clock is not None else 0.0
        if is_dist_initialized() and self.unit != "iters":  # only a time budget must stop all ranks together
            value = torch.tensor([seconds], dtype=torch.float64, device=self.device)
            all_reduce(value, "max")
            seconds = float(value.item())
        self.spent_s += seconds
        self.iterations += 1
        return seconds

    def state_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "total": self.total,
            "spent_s": self.spent_s,
            "iterations": self.iterations,
            "student_step_s": self.student_step_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a saved budget (same unit; the total may be the config's new one)."""
        if state["unit"] != self.unit:
            raise ValueError(
                f"cannot resume: the checkpoint's budget is in {state['unit']}, the config's in {self.unit}"
            )
        self.spent_s = float(state["spent_s"])
        self.iterations = int(state["iterations"])
        self.student_step_s = state.get("student_step_s")

    def max_iterations(self) -> int | None:
        """The iteration count of an ``iters`` budget; None (unknown in advance) for a time budget."""
        return int(self.total) if self.unit == "iters" else None

    def describe(self) -> str:
        """E.g. ``1500 iters`` or ``120 student_steps (0.051 s each)``."""
        text = f"{self.total:g} {self.unit}"
        if self.unit == "student_steps" and self.student_step_s:
            text += f" ({self.student_step_s:.4g} s each)"
        return text


def plain_step_timer(
    student: nn.Module,
    batches: Iterator[dict[str, torch.Tensor]],
    device: torch.device,
    optimizer: str = "sgd",
    aux_weight: float = 0.4,
) -> Callable[[], float]:
    """A function that runs one plain training iteration of a copy of ``student`` and returns its seconds.

    One iteration: the next labelled batch from ``batches`` (the run's data pipeline: decoding and
    augmentation included), forward, cross-entropy of the upsampled logits (+ ``aux_weight`` x the aux
    head's), backward, an update by ``optimizer`` (``sgd`` or ``adamw``). A copy is trained, so the run's
    weights and BN statistics are untouched (the caller forks the RNG: the copy's dropout draws from it).
    """
    model = copy.deepcopy(student).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer = (
        torch.optim.AdamW(params, lr=1e-6) if optimizer == "adamw" else torch.optim.SGD(params, lr=1e-6)
    )

    clock = StepClock(device)

    def step() -> float:
        clock.start()
        batch = next(batches)
        images, labels = batch["image"].to(device), batch["label"].to(device)
        out = model(images)
        loss = upsampled_ce(out.logits, labels)
        if out.aux_logits is not None and aux_weight > 0:
            loss = loss + aux_weight * upsampled_ce(out.aux_logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return clock.stop()

    return step


def mean_over_ranks(seconds: float, device: torch.device) -> float:
    """``seconds`` averaged over the ranks under torch.distributed (every rank then uses one value)."""
    if not is_dist_initialized():
        return seconds
    value = torch.tensor([seconds], dtype=torch.float64, device=device)
    all_reduce(value, "mean")
    return float(value.item())


def measure_student_step(
    student: nn.Module,
    batches: Iterator[dict[str, torch.Tensor]],
    device: torch.device,
    optimizer: str = "sgd",
    aux_weight: float = 0.4,
    repeats: int = 7,
    warmup: int = 3,
) -> float:
    """Median seconds of one plain training iteration (:func:`plain_step_timer`) of a copy of ``student``:
    what a baseline iteration costs on this machine now.

    The median of ``repeats`` iterations after ``warmup`` ones (several: a dataset that caches its first
    reads, like the in-memory synthetic one, is slow on its first batches only; measured in the demo: with
    one warm-up iteration that inflated the step cost up to 2x, and the time-matched baseline's steps with
    it). The run's RNG stream is unchanged. Under torch.distributed the ranks' medians are averaged.
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        step = plain_step_timer(student, batches, device, optimizer, aux_weight)
        for _ in range(warmup):
            step()
        seconds = statistics.median(step() for _ in range(repeats))
    return mean_over_ranks(seconds, device)
