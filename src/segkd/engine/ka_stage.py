"""Knowledge Adaptation stage 1 (``train.stage=ka_autoencoder``): fit the teacher-feature auto-encoder.

The auto-encoder (He et al., CVPR 2019, "Knowledge Adaptation for Efficient Semantic Segmentation")
is trained by :func:`segkd.losses.ka.fit_autoencoder` on the frozen teacher's ``feat`` for
``train.iters`` batches of the training stream (``data.batch_size`` per process; under torchrun the
gradients are averaged over the processes, so one step sees the global batch), with the run's ``optim``
section (optimizer, lr, momentum, betas, weight decay, poly power, LR floor, warm-up; ``head_lr_mult`` does
not apply), and saved as ``RUN_DIR/autoencoder.pt`` by rank 0; stage 2 points
the ``ka_adapt`` / ``ka_affinity`` terms at that file (option ``autoencoder``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from segkd.config_schema import ExperimentConfig
from segkd.distributed import barrier, is_main_process
from segkd.engine import builder
from segkd.rundir import RunDir


def train_ka_autoencoder(
    cfg: ExperimentConfig, device: torch.device, run_dir: Path, data: builder.DataBundle | None = None
) -> Path:
    """Fit and save the auto-encoder; returns the run directory. Requires ``distill.teacher``."""
    from segkd.losses.ka import fit_autoencoder, save_autoencoder

    if cfg.distill.teacher is None:
        raise ValueError("train.stage=ka_autoencoder needs distill.teacher (with its checkpoint)")
    data = data if data is not None else builder.build_data(cfg)
    teacher = builder.build_teacher(cfg, data.num_classes, data.class_names).to(device)
    batches = builder.build_train_iterator(data, cfg, start_iter=0)
    tic = time.perf_counter()
    o = cfg.optim  # the run's optim section drives stage 1 (name, lr, momentum, betas, wd, poly, warm-up)
    ae, history = fit_autoencoder(
        teacher, batches, cfg.train.iters, lr=o.lr, weight_decay=o.weight_decay, device=device,
        progress=is_main_process(), momentum=o.momentum, optimizer=o.name, betas=tuple(o.betas),
        poly_power=o.poly_power, warmup_iters=o.warmup_iters, warmup_ratio=o.warmup_ratio,
        lr_floor=o.min_lr / o.lr if o.lr > 0 else 0.0,
    )
    if is_main_process():
        meta = {
            "teacher": cfg.distill.teacher.name,
            "iters": cfg.train.iters,
            "final_loss": history[-1],
            "train_time_s": round(time.perf_counter() - tic, 2),
        }
        save_autoencoder(RunDir(run_dir).autoencoder, ae, meta)
        print(
            f"segkd train: auto-encoder saved to {RunDir(run_dir).autoencoder} (final loss {history[-1]:.4g})"
        )
    barrier()
    return run_dir
