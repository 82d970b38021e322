"""Why a method does not help: the size of each term's gradient on the student against the CE's.

For a finished run, the trained student (``checkpoints/latest.pt``, with the terms' modules and memories)
is given one training batch of the run's own pipeline and, for every logged term ``i`` with weight
``w_i``, the L2 norm of ``∂(w_i L_i)/∂θ`` over the student's parameters θ is measured. A term whose
gradient is orders of magnitude below the CE's barely moves the student; one far above it dominates the
labels. The comparison reports these norms for the methods whose gain is not shown to be positive.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from segkd.checkpoint_io import read_checkpoint
from segkd.config import from_dict
from segkd.config_schema import ExperimentConfig
from segkd.engine import builder
from segkd.engine.distiller import cached_maps
from segkd.rundir import RunDir


def term_gradient_norms(run_dir: str | Path, data: builder.DataBundle | None = None) -> dict[str, float]:
    """``{term: ||∂(w · term)/∂θ_student||_2}`` on the run's first training batch (seed of the run)."""
    run = RunDir(run_dir)
    cfg = from_dict(ExperimentConfig, yaml.safe_load(run.config.read_text()))
    cfg.train.device, cfg.train.resume = "cpu", None
    data = data or builder.build_data(cfg)
    student = builder.build_student(cfg.model, data.num_classes)
    teacher = builder.build_teacher(cfg, data.num_classes, data.class_names)
    distiller = builder.build_distiller(cfg, student, teacher, data.num_classes, data.ignore_index)
    state = read_checkpoint(run.latest)
    distiller.student.load_state_dict(state["model"])
    for name, loss in distiller.losses.items():
        loss.load_state_dict(state["losses"][name])
    distiller.shared.load_state_dict(state.get("shared", {}))
    distiller.train()
    batch = next(builder.build_train_iterator(data, cfg, 0, 1))
    with torch.random.fork_rng(devices=[]):  # the heads' dropout: the same mask on every call
        torch.manual_seed(cfg.train.seed)
        result = distiller.compute(batch["image"], batch["label"], batch.get("labeled"), cached_maps(batch))
    params = [p for p in distiller.student.parameters() if p.requires_grad]
    norms = {}
    for name, value in result.terms.items():
        grads = torch.autograd.grad(
            distiller.weight_of(name) * value, params, retain_graph=True, allow_unused=True
        )
        norms[name] = float(torch.sqrt(sum((g.detach() ** 2).sum() for g in grads if g is not None)))
    return norms
