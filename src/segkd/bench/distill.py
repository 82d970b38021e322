"""``segkd bench distill``: cost of each distillation method's training step against two floors.

All rows run in one process on the same random batch (``data.batch_size`` x crop size of the config),
with the student/teacher of the config (random init, nothing loaded) and the engine's own step,
:meth:`~segkd.engine.distiller.Distiller.train_step`, with the optimizers the engine builds from the
config (:func:`~segkd.engine.optim.build_optimizers`) and its AMP, clipping and accumulation settings:
teacher forward under no_grad, student forward, CE (+ aux CE), every term, weighted total, backward,
each discriminator's update, the student update. The methods are the recipes' loss terms, weights and
options (``configs/_base/methods/*.yaml``); ``options="demo"`` takes the ``segkd demo`` bundles instead.
Floors: ``student`` (the plain supervised step) and
``student+teacher`` (the same step plus the teacher forward, the least a distillation step can cost).
``ratio`` = method time / ``student+teacher`` time. Steps are timed round-robin (one step of each
method per round) so that load from other processes spreads evenly. Peak memory: CUDA
``max_memory_allocated`` on GPU, else the RSS growth of one step (:mod:`segkd.bench.memory`); both
after the warm-up steps, and all of them before any timing (which then runs with the allocator settled).
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from segkd.bench.memory import measure_peak, settle_allocator
from segkd.bench.timing import summarise, time_calls
from segkd.config_schema import ExperimentConfig
from segkd.losses.base import SharedModules
from segkd.rundir import RunDir

RECIPES = Path(__file__).resolve().parents[3] / "configs" / "_base" / "methods"


def recipe_bundles(folder: Path = RECIPES) -> dict[str, list[dict]]:
    """``{method: [{"name", "weight", "options"}, ...]}`` from the recipes' method files (no baseline)."""
    from segkd.config import read_yaml

    if not folder.is_dir():
        raise FileNotFoundError(f"recipe method files not found: {folder} (run from a segkd checkout)")
    bundles = {}
    for path in sorted(folder.glob("*.yaml")):
        terms = read_yaml(path).get("distill", {}).get("losses", [])
        if terms and not unlabelled_only(terms):
            bundles[path.stem] = [{"name": t["name"], "weight": float(t.get("weight", 1.0)),
                                   "options": dict(t.get("options") or {})} for t in terms]
    return bundles


def unlabelled_only(terms: list[dict]) -> bool:
    """Whether a bundle learns from unlabelled images alone (``pseudo_label`` with ``images: unlabeled``):
    the benchmark's batches are all labelled, so such a term would be skipped and its cost not timed."""
    return any(t["name"] == "pseudo_label"
               and (t.get("options") or {}).get("images", "unlabeled") == "unlabeled" for t in terms)


def demo_bundles() -> dict[str, list[dict]]:
    """The ``segkd demo`` recipes (demo-sized options) plus the single-term methods it does not train."""
    from segkd.demo.pipeline import METHODS

    def term(t: dict) -> dict:
        options = dict(t.get("options", {}))
        return {"name": t["name"], "weight": float(t.get("weight", 1.0)), "options": options}

    bundles = {key: [term(t) for t in terms] for key, terms in METHODS.items() if not unlabelled_only(terms)}
    for single in ("ifvd", "cwd"):
        bundles.setdefault(single, [{"name": single, "weight": 1.0, "options": {}}])
    return bundles


def method_bundles(options: str = "recipes") -> dict[str, list[dict]]:
    """Named methods: the recipes' (``options="recipes"``, default) or the demo's (``"demo"``)."""
    if options not in ("recipes", "demo"):
        raise ValueError(f"bench distill: options must be 'recipes' or 'demo', got {options!r}")
    return recipe_bundles() if options == "recipes" else demo_bundles()


@dataclass
class StepRow:
    method: str
    terms: list[str]
    median_ms: float | None = None
    p90_ms: float | None = None
    peak_mib: float | None = None
    ratio: float | None = None
    note: str = ""


def _losses(terms: list[dict], spec, ae_path: str) -> dict:
    from segkd.engine.distiller import term_names
    from segkd.losses import build_loss

    names = term_names([t["name"] for t in terms])
    built = {}
    for name, term in zip(names, terms):
        options = dict(term["options"])
        if term["name"] in ("ka_adapt", "ka_affinity"):
            options["autoencoder"] = ae_path  # the recipe's placeholder or the demo's path
        built[name] = build_loss(term["name"], spec, **options)
    return built


def _step_fn(distiller, batch: dict, cfg: ExperimentConfig):
    """One training iteration exactly as the trainer runs it: :meth:`Distiller.train_step` with the
    engine's optimizers for ``cfg`` (``train.grad_accum`` micro-batches of the same batch)."""
    from segkd.engine.optim import build_optimizers

    optimizers = build_optimizers(distiller, cfg)
    micro_batches = [batch] * cfg.train.grad_accum

    def step() -> None:
        distiller.train_step(micro_batches, optimizers)

    return step


def _prepare(row: StepRow, step, warmup: int, device: str) -> bool:
    """Warm up and measure the peak memory of one step; False (with a note) when the step fails."""
    try:
        for _ in range(max(warmup, 1)):
            step()
        row.peak_mib = measure_peak(step, device)
    except Exception as err:  # noqa: BLE001 - one failing method is reported, the others still run
        row.note = f"n/a: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
        return False
    return True


def _time_round_robin(steps: dict[int, object], rows: list[StepRow], iters: int, device: str) -> None:
    """Time every step once per round, ``iters`` rounds: background load on a shared machine then
    affects all methods alike instead of whichever one happened to run during it."""
    times: dict[int, list[float]] = {i: [] for i in steps}
    for _ in range(iters):
        for i, step in steps.items():
            times[i] += time_calls(step, 1, 0, device)
    for i, values in times.items():
        stats = summarise(values)
        rows[i].median_ms, rows[i].p90_ms = stats["median_ms"], stats["p90_ms"]


def bench_distill(cfg: ExperimentConfig, methods: list[str] | None = None, iters: int = 10,
                  warmup: int = 2, num_classes: int = 19, options: str = "recipes") -> dict:
    """Time and peak memory per method; returns a JSON-ready dict with the two floors first."""
    from segkd.engine.builder import step_settings
    from segkd.engine.distiller import Distiller, distill_spec
    from segkd.losses.ka import AutoEncoder, default_widths, save_autoencoder
    from segkd.models import build_model_from_config

    device = "cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu"
    k = cfg.model.num_classes or num_classes
    student0 = build_model_from_config(_clean(cfg.model), k).to(device)
    teacher_cfg = cfg.distill.teacher or copy.deepcopy(cfg.model)
    key = "distill.teacher" if cfg.distill.teacher is not None else "model"
    teacher = build_model_from_config(_clean(teacher_cfg), k, key=key).to(device).eval().requires_grad_(False)
    h, w = cfg.data.crop_size
    g = torch.Generator().manual_seed(0)
    images = torch.randn(cfg.data.batch_size, 3, h, w, generator=g).to(device)
    labels = torch.randint(0, k, (cfg.data.batch_size, h, w), generator=g).to(device)
    spec = distill_spec(student0, teacher, k)
    rows: list[StepRow] = []
    with tempfile.TemporaryDirectory() as tmp:
        ae_path = str(RunDir(tmp).autoencoder)
        channels = spec.teacher_feat_channels  # random-init auto-encoder of the stage-1 widths: timing only
        save_autoencoder(ae_path, AutoEncoder(channels, *default_widths(channels)))
        plan: list[tuple[str, list[dict], object]] = [("student", [], None), ("student+teacher", [], teacher)]
        bundles = method_bundles(options)
        for m in methods or list(bundles):
            plan.append((m, bundles.get(m, [{"name": m, "weight": 1.0, "options": {}}]), teacher))
        steps = {}
        for name, terms, t in plan:
            row = StepRow(name, [t["name"] for t in terms])
            rows.append(row)
            method_spec = dataclasses.replace(spec, shared=SharedModules())  # shared modules per method
            try:
                losses = _losses(terms, method_spec, ae_path)
            except Exception as err:  # noqa: BLE001
                row.note = f"n/a: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
                continue
            weights = {name: term["weight"] for name, term in zip(losses, terms)}
            settings = step_settings(cfg, device)
            distiller = Distiller(copy.deepcopy(student0), t, losses, weights, cfg.distill.aux_weight,
                                  settings=settings, shared=method_spec.shared.modules).to(device).train()
            step = _step_fn(distiller, {"image": images, "label": labels}, cfg)
            if _prepare(row, step, warmup, device):
                steps[len(rows) - 1] = step
        settle_allocator()  # memory was measured under the 64 KiB mmap pin; time with a settled allocator
        _time_round_robin(steps, rows, iters, device)
    floor = rows[1].median_ms
    for row in rows:
        row.ratio = row.median_ms / floor if row.median_ms and floor else None
    return {"student": cfg.model.name, "teacher": teacher_cfg.name, "batch": cfg.data.batch_size,
            "crop_size": [h, w], "device": device, "options": options,
            "threads": torch.get_num_threads(), "iters": iters,
            "memory": "cuda max_memory_allocated" if device == "cuda" else "RSS growth of one step",
            "rows": [asdict(r) for r in rows]}


def _clean(model_cfg):
    return dataclasses.replace(model_cfg, checkpoint=None, pretrained=False)


def distill_table(result: dict) -> str:
    """Markdown table of a :func:`bench_distill` result."""
    from segkd.bench.table import markdown_table

    rows = [[r["method"], "+".join(r["terms"]) or "-", r["median_ms"], r["p90_ms"], r["peak_mib"], r["ratio"],
             r["note"]] for r in result["rows"]]
    head = (f"student {result['student']}, teacher {result['teacher']}, batch {result['batch']} x "
            f"{result['crop_size'][0]}x{result['crop_size'][1]}, {result['device']}, "
            f"{result['threads']} threads; ratio = time / (student step + teacher forward)\n\n")
    return head + markdown_table(["method", "terms", "median ms", "p90 ms", f"peak MiB ({result['memory']})",
                                  "ratio", "note"], rows)
