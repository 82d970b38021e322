"""What a comparison trains: the baseline and each method (a resolved config each), seeds, matchings.

A :class:`ComparePlan` is plain data, built either from recipe files (:func:`plan_from_files`, what
``segkd compare`` does) or in code (the demo). Every run of the plan is one config: the method's
resolved config with ``train.seed``, the matched budget and its own ``output_dir`` filled in
(:meth:`ComparePlan.run_config`).

Matchings (``--match``):
- ``iters``: every run trains the same number of iterations (``budget``, default: the baseline's
  ``train.iters``), what papers usually report;
- ``time``: every run gets the same budget in *student-step equivalents*: the wall-clock time in which
  the plain student does ``budget`` steps on that machine. A distilled step also runs the teacher, so the
  distilled student gets fewer steps than the baseline, as at equal wall-clock on any hardware. How that
  time becomes steps (``time_by``, ``--time-by``):

  - ``ratio`` (default): the step ratio ``r`` of each method (the cost of its iteration over a baseline
    iteration's) is measured once (:mod:`segkd.engine.step_cost`, kept in ``time/step_costs.json``)
    and every seed trains ``round(budget / r)`` iterations, so seeds differ by their seed alone;
  - ``clock``: the baseline trains ``budget`` iterations; each method's run then charges its own clock
    (``train.budget_unit=student_steps``, :mod:`segkd.engine.budget`) against the seconds per iteration
    that the same seed's baseline run took, and stops when it has spent the baseline's training time.
    Whatever the run pays, it gets the baseline's seconds (it corrects its iterations as it goes), but
    its step count also moves with the machine's load while it runs. Multi-stage recipes (KA) are always
    timed so (their stages share one clock).

After training, every row's training seconds are compared with the baseline's (:mod:`.report`): a
time-matched row more than 5 % off is flagged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkd.config import ConfigError, apply_override, from_dict, parse_override, read_yaml, to_dict
from segkd.config_schema import ExperimentConfig, TeacherConfig
from segkd.engine.step_cost import StepCost

BASELINE = "baseline"
MATCHES = ("iters", "time")
TIME_BY = ("ratio", "clock")
CACHE_COSTS = ("charge", "amortize", "free")
CACHED = "@cache"


@dataclass
class MethodSpec:
    """One row of the comparison: a key (``kd``, ``cirkd``, ``baseline``) and its resolved config data."""

    key: str
    config: dict[str, Any]
    cached: bool = (
        False  # ``<method>@cache``: trained from a teacher cache (segkd.cache), not the live teacher
    )
    searched: str | None = None  # a weight search's candidate: the key of the method searched
    factor: float = 1.0  # the candidate's multiplier of every distillation weight of that method
    # Predict, then train (with ``cached``): the cache is written from the config's teacher and terms, and
    # the runs train on its arg-max labels as ordinary labels (data.unlabeled.pseudo_labels), no teacher.
    offline: bool = False

    def __post_init__(self) -> None:
        self.cached = self.cached or self.offline  # an offline row always trains from its cache

    @property
    def distilled(self) -> bool:
        return bool(self.config["distill"]["losses"])

    @property
    def base_key(self) -> str:
        return (self.searched or self.key).split("@", 1)[0]

    @property
    def cost_key(self) -> str:
        """The key its step cost is measured under: a weight search's candidates share their method's."""
        return self.searched or self.key


@dataclass
class ComparePlan:
    """Everything a comparison trains.

    Attributes:
        output: the comparison's folder (``compare.md``, ``compare.json``, plots, one run per
            ``<match>/<method>/seed<k>``, the teacher in ``teacher/`` when trained here).
        methods: the baseline first, then the methods, each a :class:`MethodSpec`.
        seeds: ``train.seed`` of each repetition (the same seeds for every method: gains are paired).
        matches: ``iters`` and/or ``time``.
        budget: iterations (``iters``) or student-step equivalents (``time``) per run.
        teacher: config data of a teacher to train once (seed 0) when the recipes do not name a trained
            one; its checkpoint then replaces ``distill.teacher.checkpoint`` of every method.
    """

    output: Path
    methods: list[MethodSpec]
    seeds: list[int]
    matches: list[str] = field(default_factory=lambda: ["iters"])
    budget: float = 0.0
    teacher: dict[str, Any] | None = None
    cache_cost: str = "charge"  # charge | amortize | free: the cache's one-off cost in time-matched budgets
    cache_codec: str = "float16"  # storage of the teacher caches (segkd cache-teacher --codec)
    time_by: str = "ratio"  # ratio | clock: how a time-matched budget becomes steps (module docstring)
    step_costs: dict[str, StepCost] = field(default_factory=dict)  # measured once per method (``ratio``)

    def __post_init__(self) -> None:
        if not self.methods or self.methods[0].key != BASELINE:
            raise ConfigError("compare: the first method of a plan must be the baseline")
        keys = [m.key for m in self.methods]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"compare: method names repeat: {', '.join(keys)}")
        bad = [m for m in self.matches if m not in MATCHES]
        if bad or not self.matches:
            raise ConfigError(
                f"compare: --match must be iters, time or both, got {', '.join(bad) or 'nothing'}"
            )
        if not self.seeds:
            raise ConfigError("compare: --seeds must be at least 1")
        if self.time_by not in TIME_BY:
            raise ConfigError(f"compare: --time-by must be one of {', '.join(TIME_BY)}, got {self.time_by!r}")
        if self.cache_cost not in CACHE_COSTS:
            raise ConfigError(f"compare: --cache-cost must be one of {', '.join(CACHE_COSTS)}")
        if self.budget <= 0:
            self.budget = float(self.methods[0].config["train"]["iters"])

    def searches(self) -> dict[str, dict[str, float]]:
        """``{searched method: {candidate key: factor}}`` of a loss-weight search (empty without one)."""
        groups: dict[str, dict[str, float]] = {}
        for method in self.methods:
            if method.searched is not None:
                groups.setdefault(method.searched, {})[method.key] = method.factor
        return groups

    def run_dir(self, match: str, key: str, seed: int) -> Path:
        return self.output / match / key / f"seed{seed}"

    @property
    def teacher_dir(self) -> Path:
        return self.output / "teacher"

    def cache_dir(self, method: MethodSpec) -> Path:
        """The teacher cache of a ``<method>@cache`` row (one per method: it stores what its terms read)."""
        return self.output / "cache" / method.base_key

    def by_ratio(self, method: MethodSpec) -> bool:
        """True when ``method``'s time-matched runs train the iterations its measured step ratio gives."""
        return self.time_by == "ratio" and method.key != BASELINE and not method.config.get("stages")

    def precharge(self, cache_seconds: float) -> float:
        """Seconds of a cache's one-off cost charged to each time-matched run using it (``cache_cost``):
        all of it (``charge``: what a user distilling one student pays), a share per seed (``amortize``:
        one cache serves every seed), or none (``free``: shown apart only)."""
        if self.cache_cost == "charge":
            return cache_seconds
        return cache_seconds / len(self.seeds) if self.cache_cost == "amortize" else 0.0

    def run_config(
        self,
        method: MethodSpec,
        seed: int,
        match: str,
        teacher_ckpt: str | None,
        cache_seconds: float | None = None,
        student_step_s: float | None = None,
    ) -> ExperimentConfig:
        """The validated config of one run (``cache_seconds``: the one-off cost of a cached row's cache;
        None configures the live teacher, e.g. to write that cache; ``student_step_s``: seconds per
        iteration of the same seed's baseline run, the unit of a clock-matched run's budget; None: the
        run measures a plain student step when it starts)."""
        raw = copy.deepcopy(method.config)
        raw["name"] = f"{method.key}_seed{seed}"
        raw["output_dir"] = str(self.run_dir(match, method.key, seed))
        raw["train"]["seed"] = seed
        raw["train"]["resume"] = "auto"  # a killed comparison continues each run where it stopped
        precharge_s = self.precharge(cache_seconds) if method.cached and cache_seconds is not None else 0.0
        if match == "iters" or method.key == BASELINE:
            raw["train"]["iters"], raw["train"]["budget"] = int(self.budget), 0.0  # r = 1 by definition
        elif self.by_ratio(method):
            if method.key not in self.step_costs:
                raise RuntimeError(f"compare: the step cost of '{method.key}' was not measured")
            iters = self.step_costs[method.key].iterations(self.budget, precharge_s)
            raw["train"]["iters"], raw["train"]["budget"] = iters, 0.0
        else:
            raw["train"]["budget"], raw["train"]["budget_unit"] = float(self.budget), "student_steps"
            raw["train"]["budget_precharge_s"] = precharge_s
            raw["train"]["budget_student_step_s"] = student_step_s or 0.0
        if method.distilled and teacher_ckpt is not None:
            if self.teacher is not None:  # the teacher trained here: its network, its weights
                raw["distill"]["teacher"].update(self.teacher["model"])
            raw["distill"]["teacher"]["checkpoint"] = teacher_ckpt
        if method.offline and cache_seconds is not None:
            raw["distill"] = {}  # a plain supervised run on labelled + pseudo-labelled images
            raw["data"]["unlabeled"]["pseudo_labels"] = str(self.cache_dir(method))
        elif method.cached and cache_seconds is not None:
            raw["distill"]["teacher"]["cache"] = str(self.cache_dir(method))
        for stage in raw.get("stages") or []:
            stage.setdefault("train", {}).pop("iters", None)  # stages share the matched budget
        return from_dict(ExperimentConfig, raw)

    def teacher_config(self) -> ExperimentConfig | None:
        """The config of the teacher trained once for the whole comparison (None: recipes name one)."""
        if self.teacher is None:
            return None
        raw = copy.deepcopy(self.teacher)
        raw["output_dir"], raw["train"]["seed"], raw["train"]["resume"] = str(self.teacher_dir), 0, "auto"
        raw["name"] = raw.get("name") or "teacher"
        return from_dict(ExperimentConfig, raw)


def search_candidates(method: MethodSpec, factors: list[float]) -> list[MethodSpec]:
    """The rows of a loss-weight search: ``method`` with every distillation weight (of every stage)
    multiplied by each factor, keyed ``<method>_x<factor>`` (e.g. ``kd_x0.5``, ``kd@cache_x2``)."""
    if not factors or any(f < 0 for f in factors) or len(set(factors)) != len(factors):
        raise ConfigError(f"compare: --search-weights needs distinct factors >= 0, got {factors}")
    rows = []
    for factor in factors:
        config = copy.deepcopy(method.config)
        for section in [config, *(config.get("stages") or [])]:
            for term in (section.get("distill") or {}).get("losses") or []:
                term["weight"] = float(term.get("weight", 1.0)) * factor
        rows.append(MethodSpec(f"{method.key}_x{factor:g}", config, method.cached, method.key, factor,
                               method.offline))
    return rows


def resolve(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Validated, defaults-filled config data with ``key=value`` overrides applied (as ``segkd train``)."""
    data = to_dict(from_dict(ExperimentConfig, raw))
    for text in overrides:
        keys, value = parse_override(text)
        if keys[:2] == ["distill", "teacher"] and len(keys) > 2 and data["distill"]["teacher"] is None:
            data["distill"]["teacher"] = to_dict(TeacherConfig())
        apply_override(data, keys, value)
    return to_dict(from_dict(ExperimentConfig, data))


def method_file(config: Path, name: str) -> Path:
    """The recipe file of method ``name``: a path as given, ``CONFIG_DIR/<name>.yaml``, or the loss bundle
    ``_base/methods/<name>.yaml`` of the nearest configs folder above ``config``."""
    if name.endswith((".yaml", ".yml")):
        return Path(name)
    folder = config if config.is_dir() else config.parent
    candidates = [folder / f"{name}.yaml"]
    candidates += [parent / "_base" / "methods" / f"{name}.yaml" for parent in [folder, *folder.parents]]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        f"compare: no recipe for method '{name}': looked for {candidates[0]} and _base/methods/{name}.yaml "
        "in the folders above it"
    )


def plan_from_files(
    config: str | Path,
    methods: list[str],
    seeds: int,
    matches: list[str],
    budget: float = 0.0,
    output: str | Path | None = None,
    teacher_config: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    cache_cost: str = "charge",
    time_by: str = "ratio",
    search_weights: list[float] | None = None,
) -> ComparePlan:
    """A plan from recipe files: ``config`` is a folder of recipes (``baseline.yaml``, ``kd.yaml`` ...)
    or the baseline's file; a method is a recipe file in that folder or a loss bundle
    (``_base/methods/<name>.yaml``) merged over the baseline. ``overrides`` apply to every run.
    ``search_weights``: each method becomes one row per factor (:func:`search_candidates`)."""
    config = Path(config)
    if not config.exists():
        raise ConfigError(f"compare: {config} does not exist")
    base_file = config / f"{BASELINE}.yaml" if config.is_dir() else config
    baseline_raw = read_yaml(base_file)
    specs = [MethodSpec(BASELINE, resolve(baseline_raw, overrides))]
    for name in methods:
        cached = name.endswith(CACHED)
        name = name[: -len(CACHED)] if cached else name
        path = method_file(config, name)
        raw = read_yaml(path)
        if "model" not in raw:  # a loss bundle: only distill (and maybe its optim) over the baseline
            from segkd.config import deep_merge

            raw = deep_merge(baseline_raw, raw)
        key = Path(name).stem if name.endswith((".yaml", ".yml")) else name
        specs.append(MethodSpec(key + (CACHED if cached else ""), resolve(raw, overrides), cached))
    teacher = resolve(read_yaml(teacher_config), overrides) if teacher_config else None
    for spec in specs[1:]:
        if spec.config["distill"]["teacher"] is None:
            if teacher is None:
                raise ConfigError(
                    f"compare: method '{spec.key}' names no distill.teacher; give --teacher-config FILE"
                )
            spec.config["distill"]["teacher"] = to_dict(from_dict(TeacherConfig, teacher["model"]))
    if search_weights:
        specs = specs[:1] + [row for spec in specs[1:] for row in search_candidates(spec, search_weights)]
    out = (
        Path(output)
        if output
        else Path("runs") / "compare" / (config.stem if config.is_file() else config.name)
    )
    return ComparePlan(
        out, specs, list(range(seeds)), matches, budget, teacher, cache_cost, time_by=time_by
    )
