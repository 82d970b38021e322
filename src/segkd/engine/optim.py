"""Every optimizer and LR schedule of a run, built in one place and keyed by role.

Roles: ``student`` (the student and the terms' student-side modules: adapters, projectors) and
``adversary/<term>`` (the discriminator of each adversarial term). The distiller's
:meth:`~segkd.engine.distiller.Distiller.train_step` receives this dict and runs every update; the
trainer only saves and restores it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from segkd.config_schema import AdversaryOptimConfig, ExperimentConfig, OptimConfig
from segkd.engine.budget import Budget
from segkd.schedule import build_poly_scheduler

STUDENT = "student"
ADVERSARY = "adversary/"


@dataclass
class RoleOptimizer:
    """An optimizer and its per-iteration LR schedule (None: constant LR)."""

    optimizer: torch.optim.Optimizer
    scheduler: Any = None

    def step(self, scaler: torch.amp.GradScaler | None = None) -> None:
        """Optimizer step (through the AMP ``scaler`` when given), then one schedule step."""
        if scaler is not None:
            scaler.step(self.optimizer)
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()


Optimizers = dict[str, RoleOptimizer]


def _param_groups(distiller: Any, cfg: OptimConfig) -> list[dict[str, Any]]:
    """Backbone at ``lr``; head, aux head and the terms' student-side modules at ``lr * head_lr_mult``."""
    student = distiller.student
    backbone = getattr(student, "backbone", None)
    backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    base, head = [], []
    for p in student.parameters():
        if p.requires_grad:
            (base if id(p) in backbone_ids or backbone is None else head).append(p)
    head += list(distiller.student_parameters())
    groups = [{"params": base, "lr": cfg.lr}, {"params": head, "lr": cfg.lr * cfg.head_lr_mult}]
    return [g for g in groups if g["params"]]


def build_student_optimizer(distiller: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or AdamW over the student and the terms' student-side modules."""
    groups = _param_groups(distiller, cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ValueError(f"config key 'optim.name': unknown optimizer {cfg.name!r} (use sgd or adamw)")


def adversary_settings(defaults: dict[str, Any], overrides: AdversaryOptimConfig) -> dict[str, Any]:
    """The term's published optimizer settings with every non-None ``distill.adversary_optim`` field."""
    chosen = {k: v for k, v in dataclasses.asdict(overrides).items() if v is not None}
    return {**defaults, **chosen}


def build_adversary_optimizer(
    params: list[torch.nn.Parameter],
    settings: dict[str, Any],
    iters: int,
    progress: Callable[[], float] | None = None,
) -> RoleOptimizer:
    """Adam or SGD over a discriminator, with a poly schedule over ``iters`` (or over a time budget's
    ``progress``) when ``poly_power`` > 0."""
    if settings["name"] == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            params, lr=settings["lr"], betas=tuple(settings["betas"]), weight_decay=settings["weight_decay"]
        )
    elif settings["name"] == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=settings["lr"], momentum=settings["momentum"], weight_decay=settings["weight_decay"]
        )
    else:
        raise ValueError(f"distill.adversary_optim.name must be 'sgd' or 'adam', got {settings['name']!r}")
    power = float(settings.get("poly_power") or 0.0)
    if power <= 0:
        return RoleOptimizer(optimizer)
    if progress is not None:
        return RoleOptimizer(optimizer, build_poly_scheduler(optimizer, iters, power, progress=progress))
    return RoleOptimizer(optimizer, torch.optim.lr_scheduler.PolynomialLR(optimizer, iters, power))


def build_optimizers(distiller: Any, cfg: ExperimentConfig, budget: Budget | None = None) -> Optimizers:
    """``{"student": ..., "adversary/<term>": ...}`` for a distiller built from ``cfg``.

    Schedules run over ``train.iters``, or over ``budget`` when it is a time budget
    (:mod:`segkd.engine.budget`)."""
    o = cfg.optim
    iters = cfg.train.iters if budget is None or budget.unit != "iters" else int(budget.total)
    progress = budget.progress if budget is not None and budget.unit != "iters" else None
    student = build_student_optimizer(distiller, o)
    scheduler = build_poly_scheduler(student, iters, o.poly_power, o.warmup_iters, o.warmup_ratio, progress,
                                     floor=o.min_lr / o.lr if o.lr > 0 else 0.0)
    optimizers = {STUDENT: RoleOptimizer(student, scheduler)}
    for name, term in distiller.adversarial_losses().items():
        settings = adversary_settings(term.adversary_optim_defaults(), cfg.distill.adversary_optim)
        optimizers[ADVERSARY + name] = build_adversary_optimizer(
            term.adversary_parameters(), settings, iters, progress
        )
    return optimizers
