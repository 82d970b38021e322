"""The iteration-based training loop shared by teachers, baselines and every distilled student.

The trainer loops, logs, validates and checkpoints; nothing else. Each iteration hands
``train.grad_accum`` micro-batches and the optimizers (built by :mod:`segkd.engine.optim`, keyed by role)
to :meth:`segkd.engine.distiller.Distiller.train_step`, which is the whole algorithm. Periodic validation
keeps ``best.pt``; ``latest.pt`` holds everything to continue exactly (model, loss modules and queues,
optimizers, schedulers, AMP scaler, iteration, RNG). SIGINT/SIGTERM stop cleanly (:mod:`.stop`). A
training pair that cannot be read stops the run after saving a resumable ``latest.pt``
(:class:`TrainingDataError`), unless ``data.skip_bad`` replaces it (logged as ``skipped``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segkd.config import save_config, to_dict
from segkd.config_schema import ExperimentConfig
from segkd.data.base import DatasetError
from segkd.data.loaders import SKIPPED, worker_error_message
from segkd.data.preflight import preflight
from segkd.distributed import (
    barrier,
    is_dist_initialized,
    is_main_process,
    local_rank,
    rank,
    setup_distributed,
    sync_norm_buffers,
)
from segkd.engine import builder
from segkd.engine.budget import Budget, measure_student_step
from segkd.engine.checkpoint import (
    check_resume_config,
    load_resume_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from segkd.engine.distiller import NonFiniteLossError
from segkd.engine.evaluator import run_evaluation, to_numpy_palette, write_eval_outputs
from segkd.engine.logger import RunLogger
from segkd.engine.optim import ADVERSARY, STUDENT, build_optimizers
from segkd.engine.seeding import seed_everything
from segkd.engine.stop import GracefulStop, TrainingInterrupted
from segkd.engine.summary import write_summary
from segkd.rundir import RunDir


def train(cfg: ExperimentConfig, data: builder.DataBundle | None = None) -> Path:
    """Train as configured (single process or under torchrun) and return the run directory.

    ``data``: prebuilt datasets (the demo shares one in-memory copy across its runs); default: from cfg.
    """
    device = setup_distributed(cfg.train.device)
    run = RunDir(cfg.output_dir)
    run.check_can_start(cfg.train.resume)
    seed_everything(cfg.train.seed, cfg.train.deterministic, cfg.train.threads)
    if cfg.train.stage == "ka_autoencoder":
        from segkd.engine.ka_stage import train_ka_autoencoder

        _start_run(run, cfg)
        return train_ka_autoencoder(cfg, device, run.root, data)
    trainer = Trainer(cfg, device, run.root, data)  # every setting is checked before anything is written
    if trainer.resume_path is None or trainer.config_changes:
        _start_run(run, cfg)  # a resumed run's config.yaml changes only with the settings it applies
    barrier()
    trainer.fit()
    return run.root


def _start_run(run: RunDir, cfg: ExperimentConfig) -> None:
    """Create the run's folders (proving they are writable) and write its resolved config (rank 0)."""
    if is_main_process():
        run.create()
        save_config(cfg, run.config)


class Trainer:
    """Builds a run from its config and runs the loop; see the module docstring."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        device: torch.device,
        run_dir: Path,
        data: builder.DataBundle | None = None,
    ) -> None:
        self.cfg, self.device, self.run_dir = cfg, device, run_dir
        self.run = RunDir(run_dir)
        seed_everything(cfg.train.seed, cfg.train.deterministic, cfg.train.threads)  # the student's init
        if data is None:
            data = builder.build_data(cfg)
            # Every rank checks (a rank that raised alone would leave the others waiting): headers of every
            # file of both splits, full loads of a sample, before the first step (segkd.data.preflight).
            preflight({"train": data.train_set, "val": data.val_set},
                      tolerate=("train",) if cfg.data.skip_bad else ())
        self.data = data
        self.meta = builder.run_meta(cfg, self.data)
        student = builder.build_student(cfg.model, self.data.num_classes)
        teacher = builder.build_teacher(cfg, self.data.num_classes, self.data.class_names)
        if is_dist_initialized() and device.type == "cuda":
            # SyncBatchNorm needs CUDA tensors; with gloo on CPU plain BatchNorm stays (buffers from rank 0).
            student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)
        from segkd.distributed import world_size
        from segkd.models.batchnorm import check_batch_size

        check_batch_size(student, cfg.data.batch_size, world_size())  # names data.batch_size before step 1
        self.distiller = builder.build_distiller(
            cfg, student, teacher, self.data.num_classes, self.data.ignore_index, device.type
        ).to(device)
        if is_dist_initialized():
            self.distiller.wrap_ddp([local_rank()] if device.type == "cuda" else None)
        start = self._peek_resume_iteration()
        self.budget = self._start_budget()
        self.optimizers = build_optimizers(self.distiller, cfg, self.budget)
        self.iteration, self.best_miou, self.train_time = 0, -1.0, 0.0
        self.validated_at = -1
        self.skipped: list[dict[str, Any]] = []  # data.skip_bad: {"iteration", "problem"} per skipped pair
        self._skipped_now: list[str] = []  # problems of the batches of the iteration being run
        self.val_loader = builder.build_val_loader_for(self.data, cfg.data)
        # Build the batch stream before restoring RNG states: creating it may draw from the global RNG.
        self.batches = builder.build_train_iterator(self.data, cfg, start, self.budget.max_iterations())
        torch.manual_seed(cfg.train.seed + 1000003 * rank())  # per-rank dropout masks
        self._resume()

    def _start_budget(self) -> Budget:
        """The run's :class:`Budget` from ``train.budget`` / ``train.iters``: continued from the resumed
        checkpoint, else (student-step budgets) with the plain student step measured now."""
        t = self.cfg.train
        budget = Budget.from_config(t)
        budget.device = self.device
        saved = self.resume_state.get("budget") if self.resume_state is not None else None
        if saved is not None:
            budget.load_state_dict(saved)
        elif self.resume_state is not None:  # a checkpoint from before budgets: iterations only
            budget.iterations = int(self.resume_state["iteration"])
        elif budget.unit != "iters":  # a fresh time budget: work done beforehand, then the step's cost
            budget.spent_s = t.budget_precharge_s
        if budget.unit == "student_steps" and budget.student_step_s is None:
            # given (segkd compare --time-by clock: the baseline run's iteration), else measured now
            budget.student_step_s = t.budget_student_step_s or t.grad_accum * measure_student_step(
                self.distiller.student,
                builder.plain_batches(self.data, self.cfg),
                self.device,
                self.cfg.optim.name,
                self.cfg.distill.aux_weight,
            )
        return budget

    # ------------------------------------------------------------------------------------ checkpoints
    def _peek_resume_iteration(self) -> int:
        self.resume_path, self.resume_state = load_resume_state(
            self.cfg.train.resume, self.cfg.output_dir, map_location=self.device
        )
        self.config_changes: dict[str, list[Any]] = {}
        self.change_log: list[dict[str, Any]] = []
        if self.resume_state is None:
            return 0
        saved = self.resume_state.get("config", {})
        self.config_changes = check_resume_config(saved, to_dict(self.cfg), self.resume_path)
        return int(self.resume_state["iteration"])

    def _resume(self) -> None:
        if self.resume_path is None:
            return
        state = self.resume_state
        self.distiller.student.load_state_dict(state["model"])
        for name, loss in self.distiller.losses.items():
            loss.load_state_dict(state["losses"][name])
        self.distiller.shared.load_state_dict(state.get("shared", {}))
        student = self.optimizers[STUDENT]
        student.optimizer.load_state_dict(state["optimizer"])
        student.scheduler.load_state_dict(state["scheduler"])
        for name, saved in state["adversary"].items():
            role = self.optimizers[ADVERSARY + name]
            role.optimizer.load_state_dict(saved["optimizer"])
            if role.scheduler is not None:
                role.scheduler.load_state_dict(saved["scheduler"])
        if state.get("scaler"):
            self.distiller.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.best_miou = float(state.get("best_miou", -1.0))
        self.train_time = float(state.get("train_time_s", 0.0))
        self.change_log = list(state.get("config_changes", []))
        self.skipped = list(state.get("skipped", []))
        if self.config_changes:
            self.change_log.append({"iteration": self.iteration, "changes": self.config_changes})
        rngs = state.get("rng_per_rank") or [state["rng"]]
        set_rng_state(rngs[rank()] if rank() < len(rngs) else state["rng"])
        if is_main_process():
            print(f"segkd train: resumed from {self.resume_path} at iteration {self.iteration}")
            for key, (old, new) in self.config_changes.items():
                print(f"segkd train: from iteration {self.iteration}: {key} {old!r} -> {new!r}")
        del self.resume_state

    def state_dict(self, gather: bool = True) -> dict[str, Any]:
        """The checkpoint dict (keys as in docs/ARCHITECTURE.md, plus scaler / best_miou / timing).

        ``gather``: collect every rank's RNG state (a collective all ranks must join)."""
        rng = rng_state()
        return {
            "model": self.distiller.student.state_dict(),
            "losses": {n: loss.state_dict() for n, loss in self.distiller.losses.items()},
            "shared": self.distiller.shared.state_dict(),
            "optimizer": self.optimizers[STUDENT].optimizer.state_dict(),
            "scheduler": self.optimizers[STUDENT].scheduler.state_dict(),
            "adversary": {
                role[len(ADVERSARY) :]: {
                    "optimizer": r.optimizer.state_dict(),
                    "scheduler": None if r.scheduler is None else r.scheduler.state_dict(),
                }
                for role, r in self.optimizers.items()
                if role.startswith(ADVERSARY)
            },
            "scaler": self.distiller.scaler.state_dict() if self.distiller.scaler.is_enabled() else None,
            "iteration": self.iteration,
            "rng": rng,
            "rng_per_rank": _gather_objects(rng) if gather else [rng],
            "best_miou": self.best_miou,
            "train_time_s": self.train_time,
            "budget": self.budget.state_dict(),
            "config": to_dict(self.cfg),
            "config_changes": self.change_log,
            "skipped": self.skipped,
            "meta": self.meta,
        }

    def sync_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm statistics (student and loss-owned modules); see
        :func:`segkd.distributed.sync_norm_buffers`. Called before each validation and checkpoint."""
        sync_norm_buffers(self.distiller.net)

    def save(self, name: str, state: dict[str, Any] | None = None) -> None:
        self.sync_buffers()  # the checkpoint holds the statistics every rank validated with
        state = state if state is not None else self.state_dict()  # every rank joins the RNG gather
        if is_main_process():
            path = self.run.checkpoint(name)
            save_checkpoint(state, path, keep_previous=path == self.run.latest)

    # ------------------------------------------------------------------------------------- training
    def _next_batch(self) -> dict[str, torch.Tensor]:
        batch = next(self.batches)  # image, label, labeled (data.unlabeled), teacher.* (a teacher cache)
        for problems in batch.get(SKIPPED, []):  # data.skip_bad: pairs replaced in this batch
            self._skipped_now += [p for p in problems.split("\n") if p]
        return {
            k: v.to(self.device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)
        }

    def _fetch_batches(self) -> list[dict[str, torch.Tensor]]:
        """This iteration's micro-batches; a pair that cannot be read saves ``latest.pt`` and stops the run
        (:class:`TrainingDataError`), the state being that of the last finished iteration."""
        try:
            return [self._next_batch() for _ in range(self.cfg.train.grad_accum)]
        except DatasetError as err:
            problem = worker_error_message(err)
            saved = self._rescue_save()
            kept = (f"saved a resumable checkpoint {self.run.latest} (iteration {self.iteration})" if saved
                    else f"rank {rank()} writes no checkpoint (only rank 0 does; the last saved one is kept)")
            raise TrainingDataError(
                f"training data error at iteration {self.iteration + 1}: {problem}; {kept}; fix or remove "
                "the file, or set data.skip_bad=true to skip unreadable pairs, then continue with "
                "train.resume=auto"
            ) from None

    def train_step(self) -> dict[str, float]:
        """One iteration, run by the distiller (:meth:`Distiller.train_step`); returns the logged terms."""
        batches = self._fetch_batches()
        logged = self.distiller.train_step(batches, self.optimizers, self.iteration)
        self.iteration += 1
        return logged

    def _log_skipped(self, logger: RunLogger) -> None:
        """Warn about, log (``skipped`` events) and keep the pairs data.skip_bad replaced this iteration."""
        for problem in self._skipped_now:
            logger.message(f"segkd train: warning: skipped a bad training pair (data.skip_bad): {problem}")
            logger.event(self.iteration, "skipped", {"problem": problem})
            self.skipped.append({"iteration": self.iteration, "problem": problem})
        self._skipped_now = []

    def _rescue_save(self) -> bool:
        """Write ``latest.pt`` without a collective (a failing rank cannot join one): rank 0 only.
        Returns whether this rank wrote it."""
        if is_main_process():
            save_checkpoint(self.state_dict(gather=False), self.run.latest, keep_previous=True)
        return is_main_process()

    # ----------------------------------------------------------------------------------- validation
    def validate(self, logger: RunLogger) -> float:
        """Validate the student; on a new best write best.pt and RUN_DIR/eval. Returns the mIoU."""
        self.sync_buffers()  # else each rank would evaluate its shard with its own BN statistics
        self.validated_at = self.iteration
        student = self.distiller.student
        metrics, samples = run_evaluation(
            student,
            self.val_loader,
            self.cfg.eval,
            self.data.num_classes,
            self.device,
            self.data.class_names,
            self.data.ignore_index,
            keep=self.cfg.eval.num_visualize,
        )
        logger.log(
            self.iteration,
            {"miou": metrics["miou"], "pixel_acc": metrics["pixel_acc"], "mean_acc": metrics["mean_acc"]},
            prefix="val",
        )
        if metrics["miou"] > self.best_miou:
            self.best_miou = metrics["miou"]
            metrics["iteration"] = self.iteration
            write_eval_outputs(
                metrics,
                samples,
                self.run.eval,
                to_numpy_palette(self.data.palette),
                self.cfg.model.input,
                self.data.ignore_index,
            )
            self.save(self.run.best.name)
        logger.message(f"iter {self.iteration}: val mIoU {metrics['miou']:.2f} (best {self.best_miou:.2f})")
        return metrics["miou"]

    def _due(self, interval: int) -> bool:
        return interval > 0 and self.iteration % interval == 0

    def _iteration(self, logger: RunLogger) -> None:
        """One training iteration, then the log, validation and checkpoint due after it."""
        cfg = self.cfg.train
        self.budget.start_step()
        logged = self.train_step()
        self.train_time += self.budget.end_step()
        self._log_skipped(logger)
        logger.step({k: v for k, v in logged.items() if "/" not in k})
        last = self.budget.exhausted()
        if self._due(cfg.log_interval) or last:
            lr = self.optimizers[STUDENT].scheduler.get_last_lr()[0]
            logger.log(self.iteration, {"lr": lr, "budget_spent": self.budget.spent, **logged})
        validated = self._due(cfg.val_interval) or last
        if validated:
            self._validate_keeping_weights(logger)
            self.distiller.train()
        if validated or self._due(cfg.ckpt_interval):
            self.save(self.run.latest.name)

    def _validate_keeping_weights(self, logger: RunLogger) -> None:
        """Validate; if validation fails (e.g. an unreadable val image), save latest.pt first, then raise.

        The rescue save uses no collective (a failing rank cannot join one); under torchrun it is written
        by rank 0 when rank 0 is the rank that failed.
        """
        try:
            self.validate(logger)
        except Exception as err:
            self._rescue_save()
            raise ValidationFailed(
                f"validation at iteration {self.iteration} failed: {err}; the trained weights are saved in "
                f"{self.run.latest} (fix the data, then segkd eval it or resume)"
            ) from err

    def fit(self) -> None:
        """Run from the current iteration to ``train.iters``, validating and checkpointing on schedule.

        SIGINT/SIGTERM stop after the current iteration with a resumable ``latest.pt``
        (:mod:`segkd.engine.stop`).
        """
        logger = RunLogger(self.run_dir, self.budget.max_iterations(), self.iteration)
        if self.config_changes:
            logger.event(self.iteration, "resume", {"changed": self.config_changes})
        if self.budget.unit != "iters":
            logger.message(f"segkd train: budget {self.budget.describe()}")
            logger.event(self.iteration, "budget", self.budget.state_dict())
        self.distiller.train()
        try:
            with GracefulStop() as stop:
                while not self.budget.exhausted():
                    self._iteration(logger)
                    signum = stop.requested(self.device)
                    if signum:
                        self.save(self.run.latest.name)
                        raise TrainingInterrupted(signum, self.iteration, str(self.run.latest))
                if self.validated_at != self.iteration:  # e.g. a budget spent before the first step
                    logger.message(f"segkd train: budget spent after {self.iteration} iterations")
                    self._validate_keeping_weights(logger)
                    self.save(self.run.latest.name)
        except (NonFiniteLossError, TrainingInterrupted, ValidationFailed, TrainingDataError) as err:
            logger.message(f"segkd train: {err}")
            raise
        finally:
            logger.close()
        if is_main_process():
            write_summary(
                self.cfg,
                self.run_dir,
                self.distiller.student,
                self.best_miou,
                self.train_time,
                self.iteration,
                config_changes=self.change_log,
                budget=self.budget.state_dict(),
                skipped=self.skipped,
            )
        barrier()


class ValidationFailed(RuntimeError):
    """Validation raised during training; the trained weights were saved before re-raising."""


class TrainingDataError(DatasetError):
    """A training pair could not be read; ``latest.pt`` was saved first. One line naming the file."""


def _gather_objects(obj: Any) -> list[Any]:
    if not is_dist_initialized():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
