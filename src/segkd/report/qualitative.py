"""Predictions of every run on the same validation images, for the qualitative grid.

Choice (documented in ``segkd report --help``): predictions are recomputed, not read from disk. Each
run's student is rebuilt from its ``config.yaml`` + checkpoint (:func:`segkd.export.loading.load_student`)
and run on the first ``num_images`` validation images of the *first* run's dataset, so every column
shows exactly the same inputs whatever each run saved. Runs whose class count differs are skipped.
"""

from __future__ import annotations

import numpy as np
import torch

from segkd.report.runs import Run
from segkd.rundir import RunDir


def _dataset(run: Run):
    from segkd.config import load_config
    from segkd.data import build_dataset_from_config

    cfg = load_config(RunDir(run.path).config)
    dataset = build_dataset_from_config(cfg.data, cfg.data.val_split, train=False, convention=cfg.model.input)
    return cfg, dataset


def grid_columns(runs: list[Run], num_images: int = 3) -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """``({column title: [RGB uint8 image per row]}, notes)``; notes say what was skipped and why."""
    from segkd.engine.evaluator import colorize, denormalize
    from segkd.export.graph import InferenceGraph
    from segkd.export.loading import load_student

    notes: list[str] = []
    cfg, dataset = _dataset(runs[0])
    samples = [dataset[i] for i in range(min(num_images, len(dataset)))]
    palette = np.asarray(dataset.palette, dtype=np.uint8)
    columns = {
        "image": [denormalize(s["image"].numpy(), cfg.model.input) for s in samples],
        "ground truth": [colorize(s["label"].numpy(), palette) for s in samples],
    }
    images = torch.stack([s["image"] for s in samples])
    for run in runs:
        try:
            model, meta = load_student(run.path)
        except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
            notes.append(f"{run.label}: no predictions ({err})")
            continue
        if meta.num_classes != dataset.num_classes:
            notes.append(f"{run.label}: skipped ({meta.num_classes} classes, "
                         f"dataset has {dataset.num_classes})")
            continue
        with torch.inference_mode():
            labels = InferenceGraph(model)(images).argmax(1).numpy()
        columns[f"{run.label}\n{run.method}"] = [colorize(label, palette) for label in labels]
    return columns, notes
