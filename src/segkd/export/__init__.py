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
from segkd.outputs import new_output, unused_path

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

    An existing file is never replaced: when ``path`` (or, for ONNX, its ``.int8.onnx`` companion) exists,
    the export is written as ``NAME-2`` (``-3`` ...); ``ExportResult.path`` is the file written.
    Raises :class:`ParityError` (naming the file, the max |logit diff| and the argmax agreement) when the
    exported copy differs by more than ``atol`` or agrees on fewer than ``min_agreement`` % of pixels.
    """
    if fmt not in ("onnx", "torchscript"):
        raise ValueError(f"unknown export format '{fmt}'; valid: onnx, torchscript")
    graph = InferenceGraph(model).cpu().eval()
    meta.input_size, meta.dynamic = [int(size[0]), int(size[1])], bool(dynamic)
    example = torch.zeros(1, 3, *size)
    final = unused_path(path, related=companions(fmt))
    # Written under a temporary name; it takes the final name only once parity passes, so a graph that
    # failed the check is never picked up by ``segkd predict`` (it is kept as *.failed-parity.* to inspect).
    staging = final.with_name(f".{final.stem}.exporting{final.suffix}")
    try:
        exporter, exported = _export(graph, example, staging, meta, fmt, dynamic)
        report = _checked_parity(graph, exported, staging, final, size, dynamic, atol, min_agreement)
        staging.replace(final)
    finally:
        staging.unlink(missing_ok=True)  # interrupted or failed: no staging file is left
    return ExportResult(final, fmt, exporter, report)


def _export(graph: InferenceGraph, example: torch.Tensor, staging: Path, meta: ModelMeta, fmt: str,
            dynamic: bool) -> tuple[str, Any]:
    """Write ``staging`` (atomically) in ``fmt``; returns (exporter used, a runner of the written file)."""
    if fmt == "onnx":
        from segkd.export.dynamic_pool import dynamic_export_copy
        from segkd.export.onnx_export import export_onnx

        # Adaptive pooling with fixed bin indices would pin the exported size; parity is still checked
        # against the unmodified graph.
        target = dynamic_export_copy(graph) if dynamic else graph
        _, exporter = export_onnx(target, example, staging, meta, dynamic)
        return exporter, onnx_runner(onnx_session(staging))
    from segkd.export.torchscript_export import export_torchscript, load_torchscript

    export_torchscript(graph, example, staging, meta)
    return "jit.trace", torch_runner(load_torchscript(staging)[0])


def _checked_parity(graph: InferenceGraph, exported: Any, staging: Path, final: Path, size: tuple[int, int],
                    dynamic: bool, atol: float, min_agreement: float) -> ParityReport:
    """The parity report of the staged file; a failed check keeps it as ``*.failed-parity.*`` and raises."""
    try:
        report = compare(torch_runner(graph), exported, parity_inputs(tuple(size), dynamic))
        check(report, atol, min_agreement, str(final))
    except Exception as err:
        failed = unused_path(final.with_name(f"{final.stem}.failed-parity{final.suffix}"))
        staging.replace(failed)
        raise ParityError(f"{err} (the exported file is kept as {failed}; {final} was not written)") from err
    return report


def companions(fmt: str) -> Any:
    """The files written beside an export of ``fmt`` under a derived name (``best.onnx``:
    ``best.int8.onnx`` by ``export --quantize int8``): a name is taken when any of them exists."""
    if fmt != "onnx":
        return None
    from segkd.export.quantize import int8_path_for

    return lambda path: [int8_path_for(path)]


def export_student(checkpoint: str | Path, path: str | Path | None = None, fmt: str = "onnx",
                   size: tuple[int, int] | None = None, dynamic: bool = False,
                   **tolerances: float) -> ExportResult:
    """Load the student of a checkpoint (or run directory) and :func:`export_model` it.

    ``path`` defaults to the checkpoint's name with ``.onnx`` / ``.ts``; ``size`` to the config's crop size.
    An existing file is kept and the export numbered (``best-2.onnx``, said on stdout); the folder is
    checked writable before the student is loaded.
    """
    from segkd.export.loading import load_student, resolve_checkpoint

    if path is None:
        path = resolve_checkpoint(checkpoint).with_suffix(".onnx" if fmt == "onnx" else ".ts")
    path = new_output(path, "export", related=companions(fmt))
    model, meta = load_student(checkpoint)
    size = tuple(size or meta.input_size or (512, 1024))
    return export_model(model, meta, path, fmt, size, dynamic, **tolerances)


def evaluate_onnx(cfg: Any, path: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Metrics of an exported (float or INT8) ``.onnx`` student on ``data.val_split``, run by ONNX Runtime
    through the engine's evaluation (:func:`segkd.engine.evaluation.evaluate`)."""
    from segkd.engine.evaluation import evaluate
    from segkd.export.onnx_module import OnnxSegmentor

    return evaluate(cfg, path, out_dir, model=OnnxSegmentor(path))
