"""The iteration-based training loop shared by teachers, baselines and every distilled student.

One iteration = ``train.grad_accum`` micro-batches: teacher forward (no grad), student + loss terms
forward (DDP-wrapped), backward of ``total / grad_accum``; then each adversary (discriminator) takes its
own step on the detached student outputs of the last micro-batch, then the student optimizer steps and
the poly schedule advances. Periodic validation keeps ``best.pt``; ``latest.pt`` holds everything to
continue exactly (model, loss modules and queues, optimizers, schedulers, AMP scaler, iteration, RNG).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from segkd.config import save_config, to_dict
from segkd.config_schema import ExperimentConfig
from segkd.distributed import (
    all_reduce,
    barrier,
    is_dist_initialized,
    is_main_process,
    local_rank,
    rank,
    setup_distributed,
)
from segkd.engine import builder
from segkd.engine.checkpoint import (
    atomic_save,
    checkpoint_dir,
    load_checkpoint,
    resolve_resume,
    rng_state,
    set_rng_state,
)
from segkd.engine.distiller import NonFiniteLossError, StepResult
from segkd.engine.evaluator import run_evaluation, to_numpy_palette, write_eval_outputs
from segkd.engine.logger import RunLogger
from segkd.engine.seeding import seed_everything
from segkd.engine.summary import write_summary
from segkd.models.outputs import SegOutput


def train(cfg: ExperimentConfig, data: builder.DataBundle | None = None) -> Path:
    """Train as configured (single process or under torchrun) and return the run directory.

    ``data``: prebuilt datasets (the demo shares one in-memory copy across its runs); default: from cfg.
    """
    device = setup_distributed(cfg.train.device)
    run_dir = Path(cfg.output_dir)
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    barrier()
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    if cfg.train.stage == "ka_autoencoder":
        from segkd.engine.ka_stage import train_ka_autoencoder

        return train_ka_autoencoder(cfg, device, run_dir, data)
    Trainer(cfg, device, run_dir, data).fit()
    return run_dir


def _detached(out: SegOutput) -> SegOutput:
    return SegOutput(
        logits=out.logits.detach(),
        feat=out.feat.detach(),
        aux_logits=None if out.aux_logits is None else out.aux_logits.detach(),
        stages=[s.detach() for s in out.stages],
    )


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
        self.data = data if data is not None else builder.build_data(cfg)
        self.meta = builder.run_meta(cfg, self.data)
        student = builder.build_student(cfg, self.data.num_classes)
        teacher = builder.build_teacher(cfg, self.data.num_classes, self.data.class_names)
        if is_dist_initialized() and device.type == "cuda":
            # SyncBatchNorm needs CUDA tensors; with gloo on CPU plain BatchNorm stays (buffers from rank 0).
            student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)
        self.distiller = builder.build_distiller(
            cfg, student, teacher, self.data.num_classes, self.data.ignore_index
        ).to(device)
        if is_dist_initialized():
            self.distiller.wrap_ddp([local_rank()] if device.type == "cuda" else None)
        self.optimizer = builder.build_optimizer(self.distiller, cfg.optim)
        self.scheduler = builder.build_scheduler(self.optimizer, cfg)
        self.adversaries = builder.build_adversaries(self.distiller, cfg)
        amp = cfg.train.amp
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
        self.iteration, self.best_miou, self.train_time = 0, -1.0, 0.0
        self.val_loader = builder.build_val_loader_for(self.data, cfg)
        start = self._peek_resume_iteration()
        # Build the batch stream before restoring RNG states: creating it may draw from the global RNG.
        self.batches = builder.build_train_iterator(self.data, cfg, start)
        torch.manual_seed(cfg.train.seed + 1000003 * rank())  # per-rank dropout masks
        self._resume()

    # ------------------------------------------------------------------------------------ checkpoints
    def _peek_resume_iteration(self) -> int:
        self.resume_path = resolve_resume(self.cfg.train.resume, self.cfg.output_dir)
        if self.resume_path is None:
            return 0
        self.resume_state = load_checkpoint(self.resume_path, map_location=self.device)
        return int(self.resume_state["iteration"])

    def _resume(self) -> None:
        if self.resume_path is None:
            return
        state = self.resume_state
        self.distiller.student.load_state_dict(state["model"])
        for name, loss in self.distiller.losses.items():
            loss.load_state_dict(state["losses"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for name, (opt, sched) in self.adversaries.items():
            opt.load_state_dict(state["adversary"][name]["optimizer"])
            if sched is not None:
                sched.load_state_dict(state["adversary"][name]["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.best_miou = float(state.get("best_miou", -1.0))
        self.train_time = float(state.get("train_time_s", 0.0))
        rngs = state.get("rng_per_rank") or [state["rng"]]
        set_rng_state(rngs[rank()] if rank() < len(rngs) else state["rng"])
        if is_main_process():
            print(f"segkd train: resumed from {self.resume_path} at iteration {self.iteration}")
        del self.resume_state

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint dict (keys as in docs/ARCHITECTURE.md, plus scaler / best_miou / timing)."""
        rng = rng_state()
        return {
            "model": self.distiller.student.state_dict(),
            "losses": {n: loss.state_dict() for n, loss in self.distiller.losses.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "adversary": {
                n: {"optimizer": o.state_dict(), "scheduler": None if s is None else s.state_dict()}
                for n, (o, s) in self.adversaries.items()
            },
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "iteration": self.iteration,
            "rng": rng,
            "rng_per_rank": _gather_objects(rng),
            "best_miou": self.best_miou,
            "train_time_s": self.train_time,
            "config": to_dict(self.cfg),
            "meta": self.meta,
        }

    def save(self, name: str, state: dict[str, Any] | None = None) -> None:
        state = state if state is not None else self.state_dict()  # every rank joins the RNG gather
        if is_main_process():
            atomic_save(state, checkpoint_dir(self.run_dir) / name)

    # ------------------------------------------------------------------------------------- training
    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _check_finite(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """Mean of each term over ranks; raise :class:`NonFiniteLossError` naming the first bad one."""
        names = list(terms)
        values = torch.stack([terms[n].detach().float() for n in names])
        all_reduce(values, "mean")
        for name, value in zip(names, values.tolist()):
            if not torch.isfinite(torch.tensor(value)):
                raise NonFiniteLossError(name, self.iteration, value)
        return dict(zip(names, values.tolist()))

    def _micro_step(self, last: bool) -> tuple[StepResult, dict[str, float], Any]:
        batch = next(self.batches)
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        with self.distiller.no_sync() if not last else nullcontext():
            with self._autocast():
                result = self.distiller.compute(images, labels)
            logged = self._check_finite({**result.terms, "total": result.total})
            self.scaler.scale(result.total / self.cfg.train.grad_accum).backward()
        return result, logged, (images, labels)

    def _adversary_step(
        self, result: StepResult, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, float]:
        from segkd.losses.base import DistillBatch

        logged: dict[str, float] = {}
        student = _detached(result.student)
        for name, (opt, sched) in self.adversaries.items():
            loss = self.distiller.losses[name]
            opt.zero_grad(set_to_none=True)
            with self._autocast():
                out = loss.adversary_step(student, result.teacher, DistillBatch(images=images, labels=labels))
            terms = self._check_finite({f"{name}/{k}": v for k, v in out.items()})
            out["loss"].backward()
            for p in loss.adversary_parameters():
                if p.grad is not None:
                    all_reduce(p.grad, "mean")  # outside the DDP forward: reduce by hand
            opt.step()
            if sched is not None:
                sched.step()
            logged.update(terms)
        return logged

    def train_step(self) -> dict[str, float]:
        """One iteration (all micro-batches, adversaries, optimizer and schedule); returns logged terms."""
        self.optimizer.zero_grad(set_to_none=True)
        accum = self.cfg.train.grad_accum
        sums: dict[str, float] = {}
        for micro in range(accum):
            result, logged, (images, labels) = self._micro_step(last=micro == accum - 1)
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + v / accum
        sums.update(self._adversary_step(result, images, labels))
        if self.cfg.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.iteration += 1
        return sums

    # ----------------------------------------------------------------------------------- validation
    def validate(self, logger: RunLogger) -> float:
        """Validate the student; on a new best write best.pt and RUN_DIR/eval. Returns the mIoU."""
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
                self.run_dir / "eval",
                to_numpy_palette(self.data.palette),
                self.cfg.data.mean,
                self.cfg.data.std,
                self.data.ignore_index,
            )
            self.save("best.pt")
        logger.message(f"iter {self.iteration}: val mIoU {metrics['miou']:.2f} (best {self.best_miou:.2f})")
        return metrics["miou"]

    def _due(self, interval: int) -> bool:
        return interval > 0 and self.iteration % interval == 0

    def fit(self) -> None:
        """Run from the current iteration to ``train.iters``, validating and checkpointing on schedule."""
        cfg = self.cfg.train
        logger = RunLogger(self.run_dir, cfg.iters, self.iteration)
        self.distiller.train()
        try:
            while self.iteration < cfg.iters:
                tic = time.perf_counter()
                logged = self.train_step()
                self.train_time += time.perf_counter() - tic
                logger.step({k: v for k, v in logged.items() if "/" not in k})
                if self._due(cfg.log_interval) or self.iteration == cfg.iters:
                    logger.log(self.iteration, {"lr": self.scheduler.get_last_lr()[0], **logged})
                validated = self._due(cfg.val_interval) or self.iteration == cfg.iters
                if validated:
                    self.validate(logger)
                    self.distiller.train()
                if validated or self._due(cfg.ckpt_interval):
                    self.save("latest.pt")
        except NonFiniteLossError as err:
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
            )
        barrier()


def _gather_objects(obj: Any) -> list[Any]:
    if not is_dist_initialized():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
