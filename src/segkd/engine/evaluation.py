"""``segkd eval``: evaluate a checkpoint (or an exported ``.onnx``, float or INT8) on the validation split and
write ``RUN_DIR/evals/<settings>/``. Training's own evaluation (``RUN_DIR/eval``) and the run's
``summary.json`` are never touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segkd.config_schema import ExperimentConfig
from segkd.distributed import is_main_process, setup_distributed
from segkd.engine import builder
from segkd.engine.evaluator import format_table, run_evaluation, to_numpy_palette, write_eval_outputs
from segkd.outputs import check_writable
from segkd.rundir import RunDir


def load_student_weights(model: torch.nn.Module, path: str | Path, fmt: str = "auto") -> None:
    """Load a segkd training checkpoint's ``model``; other layouts go to the models package's loader."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"eval.checkpoint not found: {path}")
    from segkd.models import load_segmentor_checkpoint

    load_segmentor_checkpoint(model, path, fmt=fmt)  # safe reader: segkd.checkpoint_io


def evaluate(
    cfg: ExperimentConfig,
    checkpoint: str | Path | None = None,
    out_dir: str | Path | None = None,
    model: Any = None,
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` (default ``eval.checkpoint``) on ``data.val_split``; files in out_dir.

    ``model``: an already loaded network standing for ``checkpoint`` (e.g. an exported ``.onnx`` graph run
    by ONNX Runtime, :func:`segkd.export.evaluate_onnx`); default: the student built from ``cfg.model``
    with the checkpoint's weights."""
    checkpoint = checkpoint or cfg.eval.checkpoint
    if checkpoint is None:
        raise ValueError("no checkpoint to evaluate: pass checkpoint=PATH (eval.checkpoint)")
    ev = cfg.eval
    out = (
        Path(out_dir)
        if out_dir is not None
        else RunDir(cfg.output_dir).evaluation(checkpoint, ev.mode, list(ev.scales), ev.flip)
    )
    check_writable(out, "the evaluation folder", "choose a writable output_dir=...")  # before any work
    device = setup_distributed(cfg.train.device)
    data = builder.build_data(cfg, need_train=False)
    if model is not None:
        if getattr(model, "num_classes", data.num_classes) != data.num_classes:
            raise ValueError(f"{checkpoint}: {model.num_classes} classes, the dataset has {data.num_classes}")
    elif str(checkpoint).endswith(".onnx"):
        raise ValueError(
            f"{checkpoint} is an ONNX graph: evaluate it with segkd eval (segkd.export.evaluate_onnx)"
        )
    else:
        model = builder.build_student(cfg.model, data.num_classes)
        load_student_weights(model, checkpoint, cfg.model.checkpoint_format)
    model.to(device).eval()
    loader = builder.build_val_loader_for(data, cfg.data)
    metrics, samples = run_evaluation(
        model,
        loader,
        cfg.eval,
        data.num_classes,
        device,
        data.class_names,
        data.ignore_index,
        keep=cfg.eval.num_visualize,
    )
    metrics["checkpoint"] = str(checkpoint)
    write_eval_outputs(
        metrics, samples, out, to_numpy_palette(data.palette), cfg.data.mean, cfg.data.std, data.ignore_index
    )
    if is_main_process():
        print(format_table(metrics))
        print(f"segkd eval: results written to {out}")
    return metrics
