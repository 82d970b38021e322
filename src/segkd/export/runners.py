"""Uniform "normalised images -> logits at input size" runners for checkpoints, ONNX and TorchScript files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segkd.export.metadata import ModelMeta

Runner = Callable[[np.ndarray], np.ndarray]  # (N,3,H,W) float32 -> (N,K,H,W) float32


@dataclass
class LoadedModel:
    """A runnable model and its metadata; ``fixed_size`` is (H, W) when the graph only accepts one size."""

    run: Runner
    meta: ModelMeta
    kind: str
    fixed_size: tuple[int, int] | None = None


def onnx_session(path: str | Path, threads: int = 0, providers: list[str] | None = None):
    """An ONNX Runtime session (all graph optimisations; ``threads=0`` lets ORT choose)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def onnx_runner(session) -> Runner:
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: np.ascontiguousarray(images, dtype=np.float32)})[0]


def torch_runner(module: torch.nn.Module, device: str = "cpu") -> Runner:
    module = module.to(device).eval()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(images).to(device)).float().cpu().numpy()

    return run


def _onnx_fixed_size(session) -> tuple[int, int] | None:
    h, w = session.get_inputs()[0].shape[2:]
    return (h, w) if isinstance(h, int) and isinstance(w, int) else None


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """Load ``.onnx`` (ONNX Runtime), ``.ts``/``.pt`` TorchScript, a segkd checkpoint or a run directory."""
    from segkd.export.onnx_export import read_onnx_meta

    path = Path(path)
    if path.suffix == ".onnx":
        session = onnx_session(path)
        return LoadedModel(onnx_runner(session), read_onnx_meta(path), "onnx", _onnx_fixed_size(session))
    if path.suffix in (".ts", ".torchscript") or (path.is_file() and _is_torchscript(path)):
        from segkd.export.torchscript_export import load_torchscript

        module, meta = load_torchscript(path)
        return LoadedModel(torch_runner(module, device), meta, "torchscript")
    from segkd.export.graph import InferenceGraph
    from segkd.export.loading import load_student

    model, meta = load_student(path)
    return LoadedModel(torch_runner(InferenceGraph(model), device), meta, "checkpoint")


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("extra/" + "segkd_meta.json") for n in archive.namelist())
    except zipfile.BadZipFile:
        return False
