"""Train every run of a :class:`~segkd.compare.plan.ComparePlan` and collect what each one measured.

Order: the teacher once (when the plan trains it), then for each matching and each seed the baseline and
every method, so that after the first seed a full (if anecdotal) row set exists. Each run goes through the
public :func:`segkd.engine.train` with ``train.resume=auto``: a killed comparison, started again with the
same command, reuses every finished run (its ``summary.json``) and resumes a half-finished one from its
checkpoint. A finished run whose saved settings differ from the plan's is refused, never silently reused.
Runs of the same data settings share one in-memory dataset. Works under ``torchrun`` (every rank runs
the same loop; rank 0 writes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from segkd.checkpoint_io import read_checkpoint
from segkd.compare.plan import BASELINE, ComparePlan
from segkd.config import ConfigError, to_dict
from segkd.config_schema import ExperimentConfig
from segkd.distributed import barrier, is_main_process, setup_distributed
from segkd.engine import train
from segkd.engine.builder import DataBundle, build_data
from segkd.engine.checkpoint import changed_settings
from segkd.engine.stages import stage_configs
from segkd.engine.step_cost import StepCost, measure_step_cost
from segkd.outputs import write_text
from segkd.rundir import RunDir

# Keys that name a run rather than set it (they differ between a plan and its saved config by design).
_IDENTITY = ("name", "output_dir", "train.resume", "distill.teacher.checkpoint")


@dataclass
class RunResult:
    """What one finished run measured (from its ``summary.json``; costs summed over its stages)."""

    method: str
    seed: int
    match: str
    run_dir: str
    miou: float
    train_time_s: float
    iters: int
    step_s: float
    student_step_s: float | None
    reused: bool
    cache_s: float = 0.0  # one-off cost of the teacher cache a ``@cache`` row trains from (shown apart)
    planned_ratio: float | None = None  # the step ratio measured once (time-matched by ratio), else None
    precharge_s: float = 0.0  # the share of the cache's cost charged to this run's time budget

    @property
    def compute_s(self) -> float:
        """Seconds this run cost against its budget: its training steps plus the charged cache share."""
        return self.train_time_s + self.precharge_s


class DataCache:
    """One dataset bundle per distinct data setting, shared by the runs that use it."""

    def __init__(self) -> None:
        self.bundles: dict[str, DataBundle] = {}

    def __call__(self, cfg: ExperimentConfig) -> DataBundle:
        key = json.dumps([to_dict(cfg.data), cfg.model.num_classes], sort_keys=True)
        if key not in self.bundles:
            from segkd.data.preflight import preflight

            bundle = build_data(cfg)
            preflight({"train": bundle.train_set, "val": bundle.val_set})
            self.bundles[key] = bundle
        return self.bundles[key]


def check_teachers(plan: ComparePlan) -> None:
    """Refuse before any training when a distilled method's teacher weights are missing."""
    if plan.teacher is not None:
        return
    for method in plan.methods[1:]:
        teacher = method.config["distill"]["teacher"]
        path = teacher.get("checkpoint")
        if teacher.get("source", "segkd") == "segkd" and not (path and Path(path).is_file()):
            raise ConfigError(
                f"compare: method '{method.key}': distill.teacher.checkpoint {path!r} is not a file; "
                "set it to the trained teacher (distill.teacher.checkpoint=...) or let the comparison train "
                "one with --teacher-config FILE"
            )


def ensure_teacher(plan: ComparePlan, data: Callable[[ExperimentConfig], DataBundle]) -> str | None:
    """The teacher checkpoint every method uses: trained once here (reused when already trained), or
    None when the recipes name their own."""
    cfg = plan.teacher_config()
    if cfg is None:
        return None
    run = RunDir(cfg.output_dir)
    if not run.summary.is_file():
        _announce(f"teacher ({cfg.model.name}) -> {run.root}")
        train(cfg, data(cfg))
    return str(run.trained_checkpoint())


def ensure_caches(plan: ComparePlan, teacher_ckpt: str | None) -> dict[str, float]:
    """Write the teacher cache of every ``@cache`` row once (resumable; reused when complete) and return
    ``{row: one-off cost in seconds}``. The cost of the writes is kept in ``compare_cost.json`` beside the
    cache, so a comparison continued later still counts it."""
    costs: dict[str, float] = {}
    for method in (m for m in plan.methods if m.cached):
        folder = plan.cache_dir(method)
        record = folder / "compare_cost.json"
        if not record.is_file():
            from segkd.engine.teacher_cache import cache_teacher

            _announce(f"teacher cache for {method.key} -> {folder}")
            cfg = plan.run_config(method, plan.seeds[0], "iters", teacher_ckpt)
            manifest = cache_teacher(cfg, folder, None, plan.cache_codec, progress=is_main_process())
            if is_main_process():
                write_text(record, json.dumps({"write_seconds": float(manifest["write_seconds"])}))
            barrier()
        costs[method.key] = float(json.loads(record.read_text())["write_seconds"])
    return costs


def ensure_step_costs(
    plan: ComparePlan,
    teacher_ckpt: str | None,
    caches: dict[str, float],
    data: Callable[[ExperimentConfig], DataBundle],
) -> None:
    """Measure once the step cost of every method time-matched by ratio (:mod:`segkd.engine.step_cost`)
    and fill ``plan.step_costs``. The measurements are kept in ``time/step_costs.json``: a comparison
    continued later reuses them, so its runs keep the iteration counts they started with."""
    if "time" not in plan.matches:
        return
    record = plan.output / "time" / "step_costs.json"
    saved = read_step_costs(record)
    base = plan.run_config(plan.methods[0], plan.seeds[0], "iters", teacher_ckpt)
    for method in (m for m in plan.methods if plan.by_ratio(m)):
        if method.cost_key in saved:  # measured before, or for another candidate of a weight search
            cost = saved[method.cost_key]
        else:
            _announce(f"measuring the step cost of {method.cost_key} (time-matched by step ratio)")
            cfg = plan.run_config(method, plan.seeds[0], "iters", teacher_ckpt, caches.get(method.key))
            cost = measure_step_cost(cfg, base, data(cfg), data(base))
            saved[method.cost_key] = cost
            if is_main_process():
                write_text(record, json.dumps({k: c.as_dict() for k, c in saved.items()}, indent=2))
            barrier()
        plan.step_costs[method.key] = cost


def read_step_costs(record: Path) -> dict[str, StepCost]:
    """The step costs a comparison measured before (none when ``record`` is missing); a damaged file is
    refused in one line naming it."""
    if not record.is_file():
        return {}
    try:
        return {
            key: StepCost(float(cost["student_step_s"]), float(cost["step_s"]))
            for key, cost in json.loads(record.read_text()).items()
        }
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ConfigError(
            f"compare: {record} is not a step-cost record ({type(err).__name__}: {err}); "
            "remove it to measure the step ratios again"
        ) from None


def run_plan(
    plan: ComparePlan,
    data: Callable[[ExperimentConfig], DataBundle] | None = None,
    on_result: Callable[[list[RunResult]], None] | None = None,
) -> list[RunResult]:
    """Train (or reuse) every run of ``plan``; ``on_result`` is called with all results after each run."""
    data = data or DataCache()
    setup_distributed(plan.methods[0].config["train"]["device"])  # under torchrun: ranks known from here
    check_teachers(plan)
    teacher_ckpt = ensure_teacher(plan, data)
    caches = ensure_caches(plan, teacher_ckpt)
    ensure_step_costs(plan, teacher_ckpt, caches, data)
    results: list[RunResult] = []
    total = len(plan.matches) * len(plan.seeds) * len(plan.methods)
    for match in plan.matches:
        for seed in plan.seeds:
            baseline_step_s = None  # the baseline runs first: a clock-matched method's unit of time
            for method in plan.methods:
                cache_s = caches.get(method.key)
                cfg = plan.run_config(method, seed, match, teacher_ckpt, cache_s, baseline_step_s)
                _announce(f"[{len(results) + 1}/{total}] {match}-matched {method.key}, seed {seed}")
                result = run_one(cfg, method.key, seed, match, data)
                result.cache_s = cache_s or 0.0
                if match == "time":
                    result.precharge_s = plan.precharge(cache_s) if method.cached and cache_s else 0.0
                    if method.key in plan.step_costs:
                        result.planned_ratio = plan.step_costs[method.key].ratio
                if method.key == BASELINE:
                    baseline_step_s = result.step_s
                results.append(result)
                if on_result is not None:
                    on_result(results)
    return results


def run_one(
    cfg: ExperimentConfig, key: str, seed: int, match: str, data: Callable[[ExperimentConfig], DataBundle]
) -> RunResult:
    """Train one run (or reuse it when finished with the same settings) and read its result."""
    stages = stage_configs(cfg)
    final = RunDir(stages[-1].output_dir)
    reused = final.summary.is_file()
    if reused:
        check_same_settings(final, stages[-1])
    else:
        train(cfg, data(cfg))
    return read_result(stages, key, seed, match, reused)


def check_same_settings(run: RunDir, final: ExperimentConfig) -> None:
    """Refuse a finished run trained with other settings than the plan's (naming the keys)."""
    if not run.config.is_file():
        return
    saved = yaml.safe_load(run.config.read_text()) or {}
    changes = {
        k: v for k, v in changed_settings(saved, to_dict(final)).items() if not k.startswith(_IDENTITY)
    }
    if changes:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
        raise ConfigError(
            f"compare: {run.root} holds a finished run with other settings ({listed}); the comparison never "
            "mixes settings: give a new --output, or remove that run"
        )


def read_result(stages: list[ExperimentConfig], key: str, seed: int, match: str, reused: bool) -> RunResult:
    """Result of a finished run: mIoU and iterations of its last stage, training time of all stages."""
    summary = json.loads(RunDir(stages[-1].output_dir).summary.read_text())
    seconds = sum(_stage_seconds(stage) for stage in stages)
    iters = int(summary["iters"])
    budget = summary.get("budget") or {}
    return RunResult(
        method=key,
        seed=seed,
        match=match,
        run_dir=str(RunDir(stages[-1].output_dir).root),
        miou=float(summary["miou"]),
        train_time_s=round(seconds, 3),
        iters=iters,
        step_s=float(summary["train_time_s"]) / max(iters, 1),
        student_step_s=budget.get("student_step_s"),
        reused=reused,
    )


def _stage_seconds(stage: ExperimentConfig) -> float:
    """Training seconds of one stage: its summary, or a KA auto-encoder's saved meta."""
    run = RunDir(stage.output_dir)
    if run.summary.is_file():
        return float(json.loads(run.summary.read_text())["train_time_s"])
    if run.autoencoder.is_file():
        return float(read_checkpoint(run.autoencoder).get("meta", {}).get("train_time_s", 0.0))
    return 0.0


def results_as_dicts(results: list[RunResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def _announce(text: str) -> None:
    if is_main_process():
        print(f"segkd compare: {text}", flush=True)
