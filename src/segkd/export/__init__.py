"""Ship a trained student: ONNX / TorchScript export with a parity check, and prediction on image files.

Exported graphs take normalised RGB images ``images`` (N, 3, H, W) float32 and return ``logits``
(N, K, H, W), the class scores **bilinearly upsampled to the input size** (argmax over dim 1 = labels).
Class names, palette and the normalisation mean/std are stored as metadata (see :mod:`.metadata`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segkd.export.graph import InferenceGraph
from segkd.export.metadata import ModelMeta
from segkd.export.parity import ParityError, ParityReport, check, compare, parity_inputs
from segkd.export.runners import LoadedModel, load_model, onnx_runner, onnx_session, torch_runner

__all__ = ["ExportResult", "InferenceGraph", "LoadedModel", "ModelMeta", "ParityError", "ParityReport",
           "evaluate_onnx", "export_model", "export_student", "load_model"]


@dataclass
class ExportResult:
    path: Path
    format: str
    exporter: str
    parity: ParityReport


def export_model(model: torch.nn.Module, meta: ModelMeta, path: str | Path, fmt: str = "onnx",
                 size: tuple[int, int] = (512, 1024), dynamic: bool = False, atol: float = 1e-3,
                 min_agreement: float = 99.0) -> ExportResult:
    """Export the inference graph of ``model`` and verify parity against PyTorch on random inputs.

    Raises :class:`ParityError` (naming the file, the max |logit diff| and the argmax agreement) when the
    exported copy differs by more than ``atol`` or agrees on fewer than ``min_agreement`` % of pixels.
    """
    graph = InferenceGraph(model).cpu().eval()
    meta.input_size, meta.dynamic = [int(size[0]), int(size[1])], bool(dynamic)
    example = torch.zeros(1, 3, *size)
    final = Path(path)
    # Written under a temporary name; it takes the final name only once parity passes, so a graph that
    # failed the check is never picked up by ``segkd predict`` (it is kept as *.failed-parity.* to inspect).
    staging = final.with_name(f".{final.stem}.exporting{final.suffix}")
    if fmt == "onnx":
        from segkd.export.dynamic_pool import dynamic_export_copy
        from segkd.export.onnx_export import export_onnx

        # Adaptive pooling with fixed bin indices would pin the exported size; parity is still checked
        # against the unmodified graph.
        target = dynamic_export_copy(graph) if dynamic else graph
        _, exporter = export_onnx(target, example, staging, meta, dynamic)
        exported = onnx_runner(onnx_session(staging))
    elif fmt == "torchscript":
        from segkd.export.torchscript_export import export_torchscript, load_torchscript

        exporter = "jit.trace"
        export_torchscript(graph, example, staging, meta)
        exported = torch_runner(load_torchscript(staging)[0])
    else:
        raise ValueError(f"unknown export format '{fmt}'; valid: onnx, torchscript")
    try:
        report = compare(torch_runner(graph), exported, parity_inputs(tuple(size), dynamic))
        check(report, atol, min_agreement, str(final))
    except Exception as err:
        failed = final.with_name(f"{final.stem}.failed-parity{final.suffix}")
        staging.replace(failed)
        raise ParityError(f"{err} (the exported file is kept as {failed}; {final} was not written)") from err
    staging.replace(final)
    return ExportResult(final, fmt, exporter, report)


def export_student(checkpoint: str | Path, path: str | Path | None = None, fmt: str = "onnx",
                   size: tuple[int, int] | None = None, dynamic: bool = False,
                   **tolerances: float) -> ExportResult:
    """Load the student of a checkpoint (or run directory) and :func:`export_model` it.

    ``path`` defaults to the checkpoint's name with ``.onnx`` / ``.ts``; ``size`` to the config's crop size.
    """
    from segkd.export.loading import load_student, resolve_checkpoint

    model, meta = load_student(checkpoint)
    size = tuple(size or meta.input_size or (512, 1024))
    if path is None:
        path = resolve_checkpoint(checkpoint).with_suffix(".onnx" if fmt == "onnx" else ".ts")
    return export_model(model, meta, path, fmt, size, dynamic, **tolerances)


def evaluate_onnx(cfg: Any, path: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Metrics of an exported (float or INT8) ``.onnx`` student on ``data.val_split``, run by ONNX Runtime
    through the engine's evaluation (:func:`segkd.engine.evaluation.evaluate`)."""
    from segkd.engine.evaluation import evaluate
    from segkd.export.onnx_module import OnnxSegmentor

    return evaluate(cfg, path, out_dir, model=OnnxSegmentor(path))
