"""What one training iteration of a run costs against one plain student step, measured once.

A time-matched comparison (``segkd compare --match time``) gives every run the wall-clock time of
``B`` plain student steps. Charging each run's own clock (``train.budget_unit=student_steps``) makes the
number of steps a run gets depend on the machine's load while it runs: on the demo's 2 shared cores the
same budget gave one method 687 steps for one seed and 1063 for another, and that swing, not the seed,
decided most of the spread between seeds. :func:`measure_step_cost` measures instead, once per method,
the *step ratio* ``r = t_method / t_student`` (both medians, timed alternately in the same process so
that load affects both alike), and the comparison trains every seed of that method ``round(B / r)``
iterations: the same compute, and runs that differ by their seed alone (bit-identical when repeated,
:mod:`segkd.engine.seeding`).

Both steps are the engine's own: ``t_method`` is :meth:`Trainer.train_step` of the run as configured
(its data pipeline, teacher or teacher cache, every term, the updates), ``t_student`` the plain step of
:func:`segkd.engine.budget.plain_step_timer` on the run's labelled batches. Nothing is written: the run
is built in a temporary folder and discarded.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch

from segkd.config_schema import ExperimentConfig
from segkd.distributed import setup_distributed
from segkd.engine import builder
from segkd.engine.budget import mean_over_ranks, plain_step_timer, synchronize


@dataclass(frozen=True)
class StepCost:
    """Measured seconds of one plain student step and of one iteration of the run (medians)."""

    student_step_s: float
    step_s: float

    @property
    def ratio(self) -> float:
        """``step_s / student_step_s``: student-step equivalents one iteration of the run costs."""
        return self.step_s / self.student_step_s

    def iterations(self, budget: float, precharge_s: float = 0.0) -> int:
        """Iterations that spend ``budget`` student steps, ``precharge_s`` seconds of which are already
        charged (e.g. a teacher cache's one-off cost); at least 1."""
        left = budget - precharge_s / self.student_step_s
        return max(1, round(left / self.ratio))

    def as_dict(self) -> dict[str, float]:
        return {"student_step_s": self.student_step_s, "step_s": self.step_s, "ratio": self.ratio}


def measure_step_cost(
    cfg: ExperimentConfig,
    data: builder.DataBundle | None = None,
    rounds: int = 8,
    per_round: int = 3,
    warmup: int = 3,
) -> StepCost:
    """Median seconds of the run's iteration and of the plain student step, timed alternately.

    ``warmup`` iterations of each first (caches, allocator, lazy initialisation), then ``rounds`` rounds
    of ``per_round`` plain steps followed by ``per_round`` iterations of the run. ``train.grad_accum``
    micro-batches make one iteration, so the plain step is counted that many times. Under
    torch.distributed every rank runs the same steps and the medians are averaged over ranks.
    """
    from segkd.engine.trainer import Trainer

    device = setup_distributed(cfg.train.device)
    total = warmup + rounds * per_round + 1
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(
        devices=[device] if device.type == "cuda" else []
    ):
        probe = dataclasses.replace(
            cfg,
            output_dir=tmp,
            train=dataclasses.replace(cfg.train, resume=None, budget=0.0, iters=total, val_interval=0),
            stages=[],
        )
        trainer = Trainer(probe, device, tmp, data)
        trainer.distiller.train()
        plain = plain_step_timer(
            trainer.distiller.student,
            builder.plain_batches(trainer.data, probe),
            device,
            cfg.optim.name,
            cfg.distill.aux_weight,
        )

        def iteration() -> float:
            tic = time.perf_counter()
            trainer.train_step()
            synchronize(device)
            return time.perf_counter() - tic

        for _ in range(warmup):
            plain()
            iteration()
        plain_s, step_s = [], []
        for _ in range(rounds):
            plain_s += [plain() for _ in range(per_round)]
            step_s += [iteration() for _ in range(per_round)]
    student = cfg.train.grad_accum * mean_over_ranks(statistics.median(plain_s), device)
    return StepCost(student_step_s=student, step_s=mean_over_ranks(statistics.median(step_s), device))
