"""INT8 post-training static quantization of an exported ONNX student (ONNX Runtime).

``quantize_onnx_int8`` runs :func:`onnxruntime.quantization.quantize_static` on the float graph written by
:func:`segkd.export.export_model`: QDQ format (QuantizeLinear / DequantizeLinear pairs around each
quantized op, which ORT fuses into integer kernels), per-channel symmetric INT8 weights, unsigned INT8
activations (ORT's U8S8 default on x86-64) whose ranges come from MinMax calibration on N images of the
run's training split, prepared as for evaluation (no augmentation), resized to the export size.
The float graph first goes through ORT's ``quant_pre_process`` (shape inference and graph optimisation),
as ORT recommends. The segkd metadata (class names, palette, normalisation) is copied over, so ``predict``,
``eval`` and ``bench infer`` use the INT8 file like the float one.

After quantizing, :func:`int8_parity` compares the INT8 and float ONNX models on held-out images (the
val split): max |logit diff| and the argmax agreement, the same :class:`~segkd.export.parity.ParityReport`
as export's parity check. No tolerance is enforced by default: INT8 logits differ by design; the mIoU on
the val split (``segkd eval CONFIG checkpoint=FILE.int8.onnx``) is the accuracy measure.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segkd.export.parity import ParityReport, compare
from segkd.outputs import unused_path, write_bytes


@dataclass
class QuantizeResult:
    path: Path
    float_path: Path
    calib_images: int
    parity: ParityReport


def dataset_images(cfg: Any, split: str, count: int, size: Sequence[int], seed: int = 0) -> list[np.ndarray]:
    """``count`` normalised images (1, 3, H, W) float32 of ``split``, evaluation transform, resized to
    ``size`` (bilinear) when they differ; evenly spaced over the split (deterministic)."""
    import torch
    import torch.nn.functional as F

    from segkd.data import build_dataset_from_config

    dataset = build_dataset_from_config(cfg.data, split, train=False, convention=cfg.model.input)
    if len(dataset) == 0:
        raise ValueError(f"split '{split}' of {cfg.data.name} has no images")
    indices = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int)
    images = []
    for i in indices:
        x = torch.as_tensor(dataset[int(i)]["image"]).float()[None]
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        images.append(np.ascontiguousarray(x.numpy(), dtype=np.float32))
    return images


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a list of (1, 3, H, W) images."""

    def __init__(self, input_name: str, images: list[np.ndarray]) -> None:
        self._items: Iterator[np.ndarray] = iter(images)
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._items, None)
        return None if image is None else {self._name: image}


def quantize_onnx_int8(float_path: str | Path, out_path: str | Path, calib_images: list[np.ndarray],
                       per_channel: bool = True, reduce_range: bool = False) -> Path:
    """Write the INT8 QDQ model of ``float_path`` to ``out_path`` (atomically), calibrated on
    ``calib_images``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calib_images:
        raise ValueError("INT8 quantization needs at least one calibration image (--calib N, N >= 1)")
    float_path, out_path = Path(float_path), Path(out_path)
    proto = onnx.load(str(float_path))
    input_name = proto.graph.input[0].name
    props = {p.key: p.value for p in proto.metadata_props}
    with tempfile.TemporaryDirectory() as tmp:  # ORT writes files; the result is then written atomically
        prepared, quantized_path = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized_path), _Reader(input_name, calib_images),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=final_resize_nodes(onnx.load(str(prepared))))
        quantized = onnx.load(str(quantized_path))
    onnx.helper.set_model_props(quantized, props)
    return write_bytes(out_path, quantized.SerializeToString())


def final_resize_nodes(proto: Any) -> list[str]:
    """Names of the Resize / Upsample nodes that produce a graph output (the logits upsampled to the
    input size). They stay float: quantizing them would dequantize an (N, K, H, W) full-resolution
    tensor instead of the (N, K, H/s, W/s) logits, which costs more than the integer resize saves."""
    outputs = {o.name for o in proto.graph.output}
    return [n.name for n in proto.graph.node
            if n.op_type in ("Resize", "Upsample") and any(o in outputs for o in n.output)]


def int8_parity(float_path: str | Path, int8_path: str | Path, images: list[np.ndarray]) -> ParityReport:
    """Max |logit diff| and argmax agreement (%) of the INT8 model against the float one on ``images``."""
    from segkd.export.runners import onnx_runner, onnx_session

    return compare(onnx_runner(onnx_session(float_path)), onnx_runner(onnx_session(int8_path)), images)


def int8_path_for(float_path: str | Path) -> Path:
    """``best.onnx`` -> ``best.int8.onnx``."""
    float_path = Path(float_path)
    return float_path.with_name(f"{float_path.stem}.int8.onnx")


def quantize_student(checkpoint: str | Path, float_path: str | Path, calib: int = 64,
                     parity_images: int = 16, out_path: str | Path | None = None,
                     per_channel: bool = True, reduce_range: bool = False) -> QuantizeResult:
    """Quantize the exported float ONNX of ``checkpoint``'s student with ``calib`` images of its run's
    training split, then compare it with the float model on ``parity_images`` images of the val split."""
    from segkd.export.onnx_export import read_onnx_meta
    from segkd.export.runners import _onnx_fixed_size, onnx_session

    cfg = run_config(checkpoint)
    size = _onnx_fixed_size(onnx_session(float_path)) or tuple(read_onnx_meta(float_path).input_size or ())
    if not size:
        raise ValueError(f"{float_path}: no fixed input size to calibrate at")
    calib_images = dataset_images(cfg, cfg.data.train_split, calib, size)
    out_path = unused_path(out_path or int8_path_for(float_path), command="export")  # never over a file
    quantize_onnx_int8(float_path, out_path, calib_images, per_channel, reduce_range)
    held_out = dataset_images(cfg, cfg.data.val_split, parity_images, size)
    return QuantizeResult(out_path, Path(float_path), len(calib_images),
                          int8_parity(float_path, out_path, held_out))


def run_config(checkpoint: str | Path) -> Any:
    """The :class:`ExperimentConfig` stored in a segkd checkpoint (or a run directory's)."""
    from segkd.config import from_dict
    from segkd.config_schema import ExperimentConfig
    from segkd.engine.checkpoint import load_checkpoint
    from segkd.export.loading import resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(path)
    if "config" not in ckpt:
        raise ValueError(f"{path}: checkpoint has no 'config'; cannot find the run's dataset for calibration")
    return from_dict(ExperimentConfig, ckpt["config"])
