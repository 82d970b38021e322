"""What one training iteration of a run costs against one plain student step, measured once.

A time-matched comparison (``segkd compare --match time``) gives every run the wall-clock time of
``B`` plain student steps. Charging each run's own clock (``train.budget_unit=student_steps``) makes the
number of steps a run gets depend on the machine's load while it runs: on the demo's 2 shared cores the
same budget gave one method 687 steps for one seed and 1063 for another, and that swing, not the seed,
decided most of the spread between seeds. :func:`measure_step_cost` measures instead, once per method,
the *step ratio* ``r = t_method / t_student`` (both trimmed means, timed alternately in the same process so
that load affects both alike), and the comparison trains every seed of that method ``round(B / r)``
iterations: the same compute, and runs that differ by their seed alone (bit-identical when repeated,
:mod:`segkd.engine.seeding`).

Both are measured on the engine's own iteration, :meth:`Trainer.train_step` (the data pipeline, the
teacher or teacher cache, every term, the updates): ``t_method`` of the method's run, ``t_student`` of
the baseline's run (the plain student step is, by definition, a baseline iteration). Nothing is written:
the runs are built in a temporary folder and discarded.

What the measurement must match is what the runs then pay, each alone in its process. Two things made
them differ (issue 26; the demo's runs paid kd 1.25, cwd 1.28, dist 1.32 where 1.15, 1.07, 1.09 had been
measured):

- glibc's malloc: with its self-adjusting thresholds, the same iteration cost up to 4000 page faults
  (8 ms of a 26 ms baseline iteration) or none, depending on what the process had allocated before;
  alternating two trainers changed that history and took most of the faults off the distilled iteration.
  :func:`~segkd.engine.allocator.fix_malloc_thresholds` fixes the thresholds for the process, after which
  an iteration costs the same alone as alternated (measured in :mod:`segkd.engine.allocator`);
- the statistic: a run pays the mean of its iterations, not their median. Each side is the mean of its
  timed iterations without the slowest and the fastest ``trim`` share (a trimmed mean: robust to a rare
  stall of the shared machine, and still counting what every iteration pays).

After training, :mod:`segkd.compare.report` compares every row's actual training seconds with the
baseline's and flags a row more than 5 % off. On CUDA the iterations are timed with CUDA events
(:class:`~segkd.engine.clock.StepClock`).
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from segkd.config_schema import ExperimentConfig
from segkd.distributed import setup_distributed
from segkd.engine import builder
from segkd.engine.allocator import fix_malloc_thresholds
from segkd.engine.budget import mean_over_ranks
from segkd.engine.clock import StepClock


@dataclass(frozen=True)
class StepCost:
    """Measured seconds of one plain student step and of one iteration of the run (trimmed means)."""

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
    baseline: ExperimentConfig,
    data: builder.DataBundle | None = None,
    baseline_data: builder.DataBundle | None = None,
    rounds: int = 16,
    per_round: int = 2,
    warmup: int = 5,
    trim: float = 0.1,
) -> StepCost:
    """Median seconds of one iteration of the run ``cfg`` and of one of the ``baseline`` run, timed
    alternately.

    Both are built as the trainer builds them (in temporary folders) and stepped by
    :meth:`Trainer.train_step`: the same code path, so what the trainer adds to every iteration cancels in
    the ratio. ``warmup`` iterations of each first (caches, allocator, lazy initialisation), then
    ``rounds`` rounds of ``per_round`` baseline iterations followed by ``per_round`` iterations of the run;
    each side's seconds are the ``trim``-trimmed mean of its timed iterations. Under torch.distributed
    every rank runs the same steps and the means are averaged over ranks.
    """
    fix_malloc_thresholds()  # as every run does: what an iteration costs must not depend on the history
    device = setup_distributed(cfg.train.device)
    total = warmup + rounds * per_round + 1
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(
        devices=[device] if device.type == "cuda" else []
    ):
        run = _step_timer(cfg, device, Path(tmp) / "run", data, total)
        base = _step_timer(baseline, device, Path(tmp) / "baseline", baseline_data, total)
        for _ in range(warmup):
            base()
            run()
        base_s, run_s = [], []
        for _ in range(rounds):
            base_s += [base() for _ in range(per_round)]
            run_s += [run() for _ in range(per_round)]
    return StepCost(
        student_step_s=mean_over_ranks(trimmed_mean(base_s, trim), device),
        step_s=mean_over_ranks(trimmed_mean(run_s, trim), device),
    )


def trimmed_mean(values: list[float], trim: float) -> float:
    """Mean of ``values`` without the ``floor(trim * n)`` smallest and as many largest."""
    cut = int(trim * len(values))
    kept = sorted(values)[cut : len(values) - cut] or sorted(values)
    return statistics.fmean(kept)


def _step_timer(
    cfg: ExperimentConfig, device: torch.device, folder: Path, data: builder.DataBundle | None, iters: int
) -> Callable[[], float]:
    """A function running one training iteration of the run ``cfg`` (built in ``folder``, nothing
    written) and returning its seconds."""
    from segkd.engine.trainer import Trainer

    probe = dataclasses.replace(
        cfg,
        output_dir=str(folder),
        train=dataclasses.replace(cfg.train, resume=None, budget=0.0, iters=iters, val_interval=0),
        stages=[],
    )
    trainer = Trainer(probe, device, folder, data)
    trainer.distiller.train()
    clock = StepClock(device)
    return lambda: clock.time(trainer.train_step)
