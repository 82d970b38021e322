"""ONNX export of an :class:`~segkd.export.graph.InferenceGraph` with metadata in ``metadata_props``.

Uses PyTorch's ``torch.export``-based exporter (the default since PyTorch 2.9); if it fails on a model,
the legacy TorchScript-based exporter is tried and the fallback is reported, so export never silently
changes behaviour. Input ``images`` (N, 3, H, W) float32, output ``logits`` (N, K, H, W).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segkd.export.metadata import META_KEY, ModelMeta
from segkd.outputs import write_bytes

INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def _export_dynamo(graph: nn.Module, example: torch.Tensor, dynamic: bool) -> Any:
    shapes = None
    if dynamic:
        dim = torch.export.Dim.DYNAMIC
        shapes = ({0: dim, 2: dim, 3: dim},)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines
        program = torch.onnx.export(graph, (example,), None, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamo=True, dynamic_shapes=shapes)
    return program.model_proto


def _export_legacy(graph: nn.Module, example: torch.Tensor, dynamic: bool) -> Any:
    import onnx

    axes = {0: "batch", 2: "height", 3: "width"}
    dynamic_axes = {INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notice of the legacy exporter
        torch.onnx.export(graph, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamo=False, opset_version=17, dynamic_axes=dynamic_axes)
    return onnx.load_from_string(buffer.getvalue())


def export_onnx(graph: nn.Module, example: torch.Tensor, path: str | Path, meta: ModelMeta,
                dynamic: bool = False) -> tuple[Path, str]:
    """Export ``graph`` traced on ``example`` (N,3,H,W) to ``path``; returns (path, exporter used).

    ``dynamic`` makes batch, height and width symbolic. ``meta`` is written as JSON under the
    ``metadata_props`` key ``segkd`` (see :mod:`segkd.export.metadata`). The graph is built in memory and
    written atomically (:func:`segkd.outputs.write_bytes`): a failed export or a full disk leaves no file.
    """
    import onnx

    graph = graph.eval().cpu()
    example = example.cpu()
    exporter = "dynamo"
    try:
        proto = _export_dynamo(graph, example, dynamic)
    except Exception as err:  # noqa: BLE001 - any exporter failure -> documented fallback
        warnings.warn(f"torch.export-based ONNX export failed ({type(err).__name__}: {str(err)[:200]}); "
                      "falling back to the legacy exporter", stacklevel=2)
        exporter = "legacy"
        proto = _export_legacy(graph, example, dynamic)
    onnx.helper.set_model_props(proto, {META_KEY: meta.to_json()})
    onnx.checker.check_model(proto)
    return write_bytes(path, proto.SerializeToString()), exporter


def read_onnx_meta(path: str | Path) -> ModelMeta:
    """The :class:`ModelMeta` stored in an ONNX file by :func:`export_onnx`."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        raise ValueError(f"{path}: ONNX file has no '{META_KEY}' metadata (not exported by segkd export)")
    return ModelMeta.from_json(props[META_KEY])
