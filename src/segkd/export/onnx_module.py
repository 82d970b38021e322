"""An exported ONNX file (float or INT8) behind the segmentor contract, so ``segkd eval`` can score it.

``forward(images (N, 3, H, W)) -> SegOutput(logits (N, K, H, W))``: the graph's logits, already at the input
size; ``feat`` is empty (an exported graph has only its logits). Runs on CPU with ONNX Runtime, one image
at a time when the graph's batch is fixed to 1; a graph exported at a fixed size accepts only that size
(export with ``--size`` equal to the evaluated images, or ``--dynamic``, or use ``eval.mode=slide`` with
``eval.crop_size`` equal to the export size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from segkd.models.outputs import SegOutput


class OnnxSegmentor(nn.Module):
    """ONNX Runtime session with a ``Segmentor``-like forward (see the module docstring)."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        super().__init__()
        from segkd.export.onnx_export import read_onnx_meta
        from segkd.export.runners import _onnx_fixed_size, onnx_runner, onnx_session

        session = onnx_session(path, threads)
        self.path = str(path)
        self._run = onnx_runner(session)
        self.fixed_size = _onnx_fixed_size(session)
        batch = session.get_inputs()[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) else None
        self.meta = read_onnx_meta(path)
        self.num_classes = self.meta.num_classes

    def forward(self, images: Tensor) -> SegOutput:
        if self.fixed_size is not None and tuple(images.shape[-2:]) != tuple(self.fixed_size):
            raise ValueError(
                f"{self.path} was exported for {self.fixed_size[0]}x{self.fixed_size[1]} inputs, got "
                f"{images.shape[-2]}x{images.shape[-1]}: export with that --size or --dynamic, or evaluate "
                "with eval.mode=slide and eval.crop_size equal to the export size")
        x = images.detach().float().cpu().numpy()
        if self.fixed_batch == 1:
            out = np.concatenate([self._run(x[i : i + 1]) for i in range(x.shape[0])])
        else:
            out = self._run(x)
        return SegOutput(logits=torch.from_numpy(out).to(images.device), feat=images.new_zeros(0))
