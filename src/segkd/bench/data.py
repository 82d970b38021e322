"""``segkd bench data``: does the input pipeline keep up with the training step?

Three measurements for one experiment config, all in this process:

1. ``loader``: decoded-and-augmented images per second of the config's training loader
   (:func:`segkd.data.build_train_loader`, ``data.workers`` workers, its prefetch and pinning), from its
   creation (worker start-up included: a lower bound) to its last batch, with nothing else running.
2. ``step``: training steps per second of the config's own step (student, teacher and ``distill.losses``,
   random init, :meth:`~segkd.engine.distiller.Distiller.train_step`) on one fixed batch, and the images per
   second it therefore consumes (``batch_size`` x steps/s).
3. ``train loop``: the two together, as the trainer runs them: the step on each batch the loader yields;
   ``wait`` is the time spent blocked in ``next(loader)`` (0 when the prefetch always has a batch ready).

For a realistic decode cost without the real dataset, :func:`write_cityscapes_like` writes PNGs of
Cityscapes' size and layout (1024x2048 ``leftImg8bit`` images with smooth content plus noise, about the
size of real ones after PNG compression, and ``gtFine`` labelIds maps) into a temporary folder.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from segkd.bench.timing import summarise
from segkd.config_schema import ExperimentConfig


def write_cityscapes_like(root: str | Path, count: int, size: tuple[int, int] = (1024, 2048),
                          seed: int = 0, split: str = "train") -> Path:
    """``count`` image/label pairs in the Cityscapes layout under ``root`` (returned)."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    img_dir, lbl_dir = root / "leftImg8bit" / split / "benchcity", root / "gtFine" / split / "benchcity"
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        coarse = rng.integers(0, 256, (h // 64 + 1, w // 64 + 1, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.int16)
        image = np.clip(smooth + rng.normal(0, 2, (h, w, 3)), 0, 255).astype(np.uint8)
        labels = rng.integers(0, 34, (h // 128 + 1, w // 128 + 1), dtype=np.uint8)
        label = np.asarray(Image.fromarray(labels).resize((w, h), Image.NEAREST))
        stem = f"benchcity_{i:06d}_000019"
        Image.fromarray(image).save(img_dir / f"{stem}_leftImg8bit.png")
        Image.fromarray(label).save(lbl_dir / f"{stem}_gtFine_labelIds.png")
    return root


def _loader_rate(cfg: ExperimentConfig, dataset, batches: int) -> dict:
    """Images/s of the training loader alone, from its creation to its ``batches``-th batch.

    Worker start-up is included, so this is a lower bound of the steady rate. Timing only after the
    first batches would not do: up to ``workers * prefetch_factor`` batches are then already waiting
    in the queue, and a short run would time the queue draining instead of the decoding.
    """
    from segkd.data import build_train_loader

    start = time.perf_counter()
    loader = iter(build_train_loader(dataset, cfg.data, seed=cfg.train.seed))
    for _ in range(batches):
        next(loader)
    elapsed = time.perf_counter() - start
    del loader
    return {"images_per_s": batches * cfg.data.batch_size / elapsed, "seconds": elapsed,
            "batches": batches, "includes_worker_startup": True}


def _train_step(cfg: ExperimentConfig, num_classes: int):
    """The config's training step (random init) as a function of a batch dict."""
    from segkd.bench.distill import _clean, _losses
    from segkd.engine.builder import step_settings
    from segkd.engine.distiller import Distiller, distill_spec
    from segkd.engine.optim import build_optimizers
    from segkd.losses.base import SharedModules
    from segkd.models import build_model_from_config

    device = "cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu"
    student = build_model_from_config(_clean(cfg.model), num_classes).to(device)
    terms = [{"name": t.name, "weight": t.weight, "options": dict(t.options)} for t in cfg.distill.losses]
    teacher = None
    if terms and cfg.distill.teacher is not None:
        teacher = build_model_from_config(_clean(cfg.distill.teacher), num_classes, key="distill.teacher")
        teacher = teacher.to(device).eval().requires_grad_(False)
    spec = dataclasses.replace(distill_spec(student, teacher, num_classes), shared=SharedModules())
    losses = _losses(terms, spec, "") if teacher is not None else {}
    weights = {name: term["weight"] for name, term in zip(losses, terms)}
    distiller = Distiller(student, teacher, losses, weights, cfg.distill.aux_weight,
                          settings=step_settings(cfg, device),
                          shared=spec.shared.modules).to(device).train()
    optimizers = build_optimizers(distiller, cfg)

    def run(batch: dict) -> None:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
        distiller.train_step([batch] * cfg.train.grad_accum, optimizers)

    return run, device


def bench_data(cfg: ExperimentConfig, batches: int = 10, warmup: int = 2, step: bool = True,
               loader_batches: int | None = None) -> dict:
    """The three measurements of the module docstring; ``step=False`` measures the loader only.
    ``loader_batches`` (default ``batches``): batches drawn for the loader-alone rate; make it several
    times ``workers * prefetch_factor``."""
    from segkd.data import build_dataset_from_config, build_train_loader

    dataset = build_dataset_from_config(cfg.data, cfg.data.train_split, train=True,
                                        convention=cfg.model.input)
    result = {"dataset": cfg.data.name, "root": cfg.data.root, "samples": len(dataset),
              "crop_size": list(cfg.data.crop_size), "batch_size": cfg.data.batch_size,
              "workers": cfg.data.workers, "prefetch_factor": cfg.data.prefetch_factor,
              "pin_memory": torch.cuda.is_available(), "threads": torch.get_num_threads(),
              "loader": _loader_rate(cfg, dataset, loader_batches or batches)}
    if not step:
        return result
    run, device = _train_step(cfg, cfg.model.num_classes or dataset.num_classes)
    loader = iter(build_train_loader(dataset, cfg.data, seed=cfg.train.seed))
    fixed = next(loader)
    for _ in range(warmup):
        run(fixed)
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        run(fixed)
        times.append(time.perf_counter() - start)
    stats = summarise(times)
    teacher = cfg.distill.teacher.name if cfg.distill.teacher else None
    result["step"] = {"model": cfg.model.name, "teacher": teacher,
                      "terms": [t.name for t in cfg.distill.losses], "device": device,
                      "median_ms": stats["median_ms"], "steps_per_s": 1e3 / stats["median_ms"],
                      "images_per_s": cfg.data.batch_size * 1e3 / stats["median_ms"]}
    wait, total = 0.0, time.perf_counter()
    for _ in range(batches):
        start = time.perf_counter()
        batch = next(loader)
        wait += time.perf_counter() - start
        run(batch)
    total = time.perf_counter() - total
    result["train_loop"] = {"seconds": total, "wait_s": wait, "wait_fraction": wait / total,
                            "steps_per_s": batches / total}
    return result


def data_table(result: dict) -> str:
    """Markdown table of a :func:`bench_data` result."""
    from segkd.bench.table import markdown_table

    head = (f"{result['dataset']} ({result['samples']} samples at {result['root']}), crop "
            f"{result['crop_size'][0]}x{result['crop_size'][1]}, batch {result['batch_size']}, "
            f"{result['workers']} workers, prefetch {result['prefetch_factor']}, pin_memory "
            f"{result['pin_memory']}, {result['threads']} threads\n\n")
    rows = [["loader alone", f"{result['loader']['images_per_s']:.2f}", None, None]]
    if "step" in result:
        s, loop = result["step"], result["train_loop"]
        rows.append([f"training step ({s['model']}{' + ' + s['teacher'] if s['teacher'] else ''}, "
                     f"{'+'.join(s['terms']) or 'CE'}, {s['device']})", f"{s['images_per_s']:.2f}",
                     f"{s['steps_per_s']:.3f}", None])
        rows.append(["train loop (step on loader batches)",
                     f"{loop['steps_per_s'] * result['batch_size']:.2f}",
                     f"{loop['steps_per_s']:.3f}", f"{100 * loop['wait_fraction']:.1f}%"])
    return head + markdown_table(["what", "images/s", "steps/s", "time waiting for data"], rows)
