"""TorchScript export (``torch.jit.trace``) with metadata in ``_extra_files``.

Tracing, not scripting: the wrapped segmentor returns a dataclass and uses timm modules that are not all
scriptable, while the traced graph records the input-size-dependent upsampling from ``images.shape``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from segkd.export.metadata import TORCHSCRIPT_META_FILE, ModelMeta
from segkd.outputs import write_rendered


def export_torchscript(graph: nn.Module, example: torch.Tensor, path: str | Path, meta: ModelMeta) -> Path:
    """Trace ``graph`` on ``example`` and save it (atomically) with ``meta`` as ``segkd_meta.json`` extra
    file."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about python-side shape arithmetic
        traced = torch.jit.trace(graph.eval().cpu(), example.cpu())
        # TorchScript is deprecated upstream but still the format the user asked for: hide the notice.
        extra = {TORCHSCRIPT_META_FILE: meta.to_json()}
        return write_rendered(path, lambda buffer: torch.jit.save(traced, buffer, _extra_files=extra))


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, ModelMeta]:
    """Load a TorchScript file written by :func:`export_torchscript` and its metadata."""
    extra = {TORCHSCRIPT_META_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra[TORCHSCRIPT_META_FILE]:
        raise ValueError(f"{path}: TorchScript file has no {TORCHSCRIPT_META_FILE} (not exported by segkd)")
    return module.eval(), ModelMeta.from_json(extra[TORCHSCRIPT_META_FILE])
