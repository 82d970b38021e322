"""What a comparison trains: the baseline and each method (a resolved config each), seeds, matchings.

A :class:`ComparePlan` is plain data, built either from recipe files (:func:`plan_from_files`, what
``segkd compare`` does) or in code (the demo). Every run of the plan is one config: the method's
resolved config with ``train.seed``, the matched budget and its own ``output_dir`` filled in
(:meth:`ComparePlan.run_config`).

Matchings (``--match``):
- ``iters``: every run trains the same number of iterations (``budget``, default: the baseline's
  ``train.iters``), what papers usually report;
- ``time``: every run gets the same budget in *student-step equivalents* (``train.budget`` with
  ``train.budget_unit=student_steps``, :mod:`segkd.engine.budget`): the wall-clock time in which the
  plain student does ``budget`` steps on that machine. A distilled step also runs the teacher, so the
  distilled student gets fewer steps than the baseline, as at equal wall-clock on any hardware.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkd.config import ConfigError, apply_override, from_dict, parse_override, read_yaml, to_dict
from segkd.config_schema import ExperimentConfig, TeacherConfig

BASELINE = "baseline"
MATCHES = ("iters", "time")


@dataclass
class MethodSpec:
    """One row of the comparison: a key (``kd``, ``cirkd``, ``baseline``) and its resolved config data."""

    key: str
    config: dict[str, Any]

    @property
    def distilled(self) -> bool:
        return bool(self.config["distill"]["losses"])


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
        if self.budget <= 0:
            self.budget = float(self.methods[0].config["train"]["iters"])

    def run_dir(self, match: str, key: str, seed: int) -> Path:
        return self.output / match / key / f"seed{seed}"

    @property
    def teacher_dir(self) -> Path:
        return self.output / "teacher"

    def run_config(
        self, method: MethodSpec, seed: int, match: str, teacher_ckpt: str | None
    ) -> ExperimentConfig:
        """The validated config of one run."""
        raw = copy.deepcopy(method.config)
        raw["name"] = f"{method.key}_seed{seed}"
        raw["output_dir"] = str(self.run_dir(match, method.key, seed))
        raw["train"]["seed"] = seed
        raw["train"]["resume"] = "auto"  # a killed comparison continues each run where it stopped
        if match == "iters":
            raw["train"]["iters"], raw["train"]["budget"] = int(self.budget), 0.0
        else:
            raw["train"]["budget"], raw["train"]["budget_unit"] = float(self.budget), "student_steps"
        if method.distilled and teacher_ckpt is not None:
            if self.teacher is not None:  # the teacher trained here: its network, its weights
                raw["distill"]["teacher"].update(self.teacher["model"])
            raw["distill"]["teacher"]["checkpoint"] = teacher_ckpt
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
) -> ComparePlan:
    """A plan from recipe files: ``config`` is a folder of recipes (``baseline.yaml``, ``kd.yaml`` ...)
    or the baseline's file; a method is a recipe file in that folder or a loss bundle
    (``_base/methods/<name>.yaml``) merged over the baseline. ``overrides`` apply to every run."""
    config = Path(config)
    if not config.exists():
        raise ConfigError(f"compare: {config} does not exist")
    base_file = config / f"{BASELINE}.yaml" if config.is_dir() else config
    baseline_raw = read_yaml(base_file)
    specs = [MethodSpec(BASELINE, resolve(baseline_raw, overrides))]
    for name in methods:
        path = method_file(config, name)
        raw = read_yaml(path)
        if "model" not in raw:  # a loss bundle: only distill (and maybe its optim) over the baseline
            from segkd.config import deep_merge

            raw = deep_merge(baseline_raw, raw)
        specs.append(
            MethodSpec(Path(name).stem if name.endswith((".yaml", ".yml")) else name, resolve(raw, overrides))
        )
    teacher = resolve(read_yaml(teacher_config), overrides) if teacher_config else None
    for spec in specs[1:]:
        if spec.config["distill"]["teacher"] is None:
            if teacher is None:
                raise ConfigError(
                    f"compare: method '{spec.key}' names no distill.teacher; give --teacher-config FILE"
                )
            spec.config["distill"]["teacher"] = to_dict(from_dict(TeacherConfig, teacher["model"]))
    out = (
        Path(output)
        if output
        else Path("runs") / "compare" / (config.stem if config.is_file() else config.name)
    )
    return ComparePlan(out, specs, list(range(seeds)), matches, budget, teacher)
