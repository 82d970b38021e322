"""What an exported model carries besides its weights: class names, palette and input normalisation.

The exported graph takes images in the student's input convention (channel-first; ``channel_order``
``rgb`` or ``bgr``, values ``u / 255 * pixel_max``, then ``(v - mean) / std``, see
:mod:`segkd.input_convention`; ImageNet RGB in [0, 1] unless the recipe set ``model.input``) and returns
logits upsampled to the input size; the metadata below is what a caller needs to prepare inputs and
colour outputs. ONNX stores it in ``metadata_props`` (one JSON string under the key ``segkd``),
TorchScript in ``_extra_files`` (``segkd_meta.json``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from segkd.config_schema import InputConfig
from segkd.input_convention import from_meta

META_KEY = "segkd"
TORCHSCRIPT_META_FILE = "segkd_meta.json"
OUTPUT_DOC = "logits (N, num_classes, H, W): class scores bilinearly upsampled to the input size"


@dataclass
class ModelMeta:
    """Inference metadata of one student (the ``meta`` dict of a segkd checkpoint, plus export facts)."""

    model_name: str
    num_classes: int
    class_names: list[str]
    mean: list[float]
    std: list[float]
    palette: list[list[int]] = field(default_factory=list)
    input_size: list[int] | None = None  # [H, W] of the export example; None when unknown
    dynamic: bool = False
    output: str = OUTPUT_DOC
    # The rest of the input convention (mean / std above are in its order and units); metadata written
    # before conventions were recorded lacks them: RGB in [0, 1].
    channel_order: str = "rgb"
    pixel_max: float = 1.0

    def __post_init__(self) -> None:
        if not self.palette:
            from segkd.data.catalog import voc_palette

            self.palette = voc_palette(self.num_classes).tolist()
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"metadata lists {len(self.class_names)} class names for {self.num_classes} classes")

    @property
    def convention(self) -> InputConfig:
        """The input convention the exported graph expects."""
        return InputConfig(channel_order=self.channel_order, pixel_max=float(self.pixel_max),  # type: ignore[arg-type]
                           mean=[float(v) for v in self.mean], std=[float(v) for v in self.std])

    @property
    def palette_array(self) -> np.ndarray:
        """Palette as a (K, 3) uint8 array."""
        return np.asarray(self.palette, dtype=np.uint8).reshape(-1, 3)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        return cls(**json.loads(text))

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], source: str = "checkpoint") -> ModelMeta:
        """Build from ``ckpt["meta"]``; a missing key is an error naming the file and the key."""
        meta = ckpt.get("meta")
        if not isinstance(meta, dict):
            raise ValueError(f"{source}: checkpoint has no 'meta' dict (model_name, num_classes, ...)")
        missing = [k for k in ("model_name", "num_classes", "mean", "std") if k not in meta]
        if missing:
            raise ValueError(f"{source}: checkpoint meta lacks key(s) {', '.join(missing)}")
        num_classes = int(meta["num_classes"])
        names = list(meta.get("class_names") or [f"class_{i}" for i in range(num_classes)])
        palette = meta.get("palette")
        palette = np.asarray(palette).reshape(-1, 3).astype(int).tolist() if palette is not None else []
        conv = from_meta(meta)  # meta["input"], else the older mean / std (RGB in [0, 1])
        return cls(model_name=str(meta["model_name"]), num_classes=num_classes, class_names=names,
                   mean=list(conv.mean), std=list(conv.std), palette=palette,
                   channel_order=conv.channel_order, pixel_max=conv.pixel_max)
