"""``segkd eval``: evaluate a checkpoint (or an exported ``.onnx``, float or INT8) on ``eval.split`` (default:
the validation split) and write ``RUN_DIR/evals/<settings>/``. Training's own evaluation (``RUN_DIR/eval``)
and the run's ``summary.json`` are never touched.

Images are prepared in the input convention the checkpoint records (``meta.input`` of a segkd checkpoint,
the metadata of an exported graph), whatever the config says; weights from elsewhere use ``model.input``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from segkd.config_schema import ExperimentConfig, InputConfig
from segkd.distributed import is_main_process, setup_distributed
from segkd.engine import builder
from segkd.engine.evaluator import format_table, run_evaluation, to_numpy_palette, write_eval_outputs
from segkd.outputs import check_writable
from segkd.rundir import RunDir


def load_student_weights(model: torch.nn.Module, path: str | Path, fmt: str = "auto") -> InputConfig | None:
    """Load a segkd training checkpoint's ``model``; other layouts go to the models package's loader.
    Returns the input convention the checkpoint records (None: weights from elsewhere)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"eval.checkpoint not found: {path}")
    from segkd.models import load_segmentor_checkpoint
    from segkd.models.input_adapter import recorded_convention

    report = load_segmentor_checkpoint(model, path, fmt=fmt)  # safe reader: segkd.checkpoint_io
    return recorded_convention(report["meta"])


def with_recorded_input(cfg: ExperimentConfig, recorded: InputConfig | None, source: Any) -> ExperimentConfig:
    """``cfg`` with ``model.input`` set to the ``recorded`` convention (a note when the config said
    otherwise); ``cfg`` itself when nothing is recorded."""
    if recorded is None or recorded == cfg.model.input:
        return cfg
    from segkd.input_convention import describe

    if is_main_process():
        print(f"segkd eval: {source} records the input convention {describe(recorded)}; using it instead of "
              f"model.input ({describe(cfg.model.input)})")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, input=recorded))


def evaluate(
    cfg: ExperimentConfig,
    checkpoint: str | Path | None = None,
    out_dir: str | Path | None = None,
    model: Any = None,
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` (default ``eval.checkpoint``) on ``eval.split`` (default ``data.val_split``);
    files in out_dir.

    ``model``: an already loaded network standing for ``checkpoint`` (e.g. an exported ``.onnx`` graph run
    by ONNX Runtime, :func:`segkd.export.evaluate_onnx`); default: the student built from ``cfg.model``
    with the checkpoint's weights."""
    checkpoint = checkpoint or cfg.eval.checkpoint
    if checkpoint is None:
        raise ValueError("no checkpoint to evaluate: pass checkpoint=PATH (eval.checkpoint)")
    ev = cfg.eval
    split = ev.split if ev.split not in (None, cfg.data.val_split) else None
    out = (
        Path(out_dir)
        if out_dir is not None
        else RunDir(cfg.output_dir).evaluation(checkpoint, ev.mode, list(ev.scales), ev.flip, split)
    )
    check_writable(out, "the evaluation folder", "choose a writable output_dir=...")  # before any work
    device = setup_distributed(cfg.train.device)
    if split is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_split=split))
    if model is None and str(checkpoint).endswith(".onnx"):
        raise ValueError(
            f"{checkpoint} is an ONNX graph: evaluate it with segkd eval (segkd.export.evaluate_onnx)"
        )
    data = builder.build_data(cfg, need_train=False)
    if model is None:
        model = builder.build_student(cfg.model, data.num_classes)
        recorded = load_student_weights(model, checkpoint, cfg.model.checkpoint_format)
    else:
        meta = getattr(model, "meta", None)
        recorded = getattr(meta, "convention", None)
    if recorded is not None and recorded != cfg.model.input:
        cfg = with_recorded_input(cfg, recorded, checkpoint)
        data = builder.build_data(cfg, need_train=False)  # images in the convention the weights expect
    if getattr(model, "num_classes", data.num_classes) != data.num_classes:
        raise ValueError(f"{checkpoint}: {model.num_classes} classes, the dataset has {data.num_classes}")
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
        metrics, samples, out, to_numpy_palette(data.palette), cfg.model.input, data.ignore_index
    )
    if is_main_process():
        print(format_table(metrics))
        print(f"segkd eval: results written to {out}")
    return metrics
