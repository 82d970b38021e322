"""Hugging Face ``transformers`` semantic-segmentation models as teachers (optional extra ``segkd[hf]``).

``name``: a local folder written by ``save_pretrained`` or a hub id (then resolved by ``transformers`` from
its cache or the hub); any architecture that ``AutoModelForSemanticSegmentation`` loads (SegFormer,
UperNet, BEiT, DPT, MobileViT, Data2Vec-Vision, ...). Mask2Former / MaskFormer / OneFormer are *universal*
segmentation models (mask + class queries, no per-pixel ``logits``) and are not loaded by this class.
Never runs repository code (``trust_remote_code=False``).

* Classes: ``config.id2label`` (generic ``LABEL_i`` names count as unknown; then only the count is checked).
* Scores: ``model(pixel_values=x).logits`` (SegFormer: 1/4 of the input; UperNet: the input size).
* Default ``feat``: the input of ``decode_head.classifier`` when the model has it (SegFormer: the fused
  MLP embedding, 256 channels for B0; UperNet: the FPN bottleneck), otherwise the input of the last
  ``Conv2d`` with ``num_labels`` outputs outside an auxiliary head.
* Input normalisation: ``image_mean`` / ``image_std`` of the folder's ``preprocessor_config.json`` (read
  as JSON), else ImageNet's; ``distill.teacher.input_mean/input_std`` override both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from torch import Tensor, nn

INSTALL_HINT = "the huggingface teacher source needs transformers: pip install 'segkd[hf]'"


def scores(network: nn.Module, images: Tensor) -> Tensor:
    """Class scores (N, K, h, w) of a ``*ForSemanticSegmentation`` model."""
    return network(pixel_values=images).logits


def class_names(config: Any) -> list[str] | None:
    """``id2label`` in index order, or None when the labels are transformers' generic ``LABEL_i``."""
    id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    names = [id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]
    return None if all(re.fullmatch(r"LABEL_\d+", n) for n in names) else names


def default_feat_module(model: nn.Module, num_labels: int) -> str:
    """``decode_head.classifier:input`` if present, else the last num_labels-output conv's input."""
    modules = dict(model.named_modules())
    if "decode_head.classifier" in modules:
        return "decode_head.classifier:input"
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.out_channels == num_labels
             and "aux" not in n]
    if not convs:
        raise ValueError("huggingface teacher: no classifier conv found; set distill.teacher.feat_module")
    return f"{convs[-1]}:input"


def preprocessor_stats(name: str) -> tuple[list[float], list[float]] | None:
    """(image_mean, image_std) from a local folder's ``preprocessor_config.json``, if it has them."""
    path = Path(name) / "preprocessor_config.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("do_normalize") is False or "image_mean" not in data or "image_std" not in data:
        return None
    return list(data["image_mean"]), list(data["image_std"])


def build(cfg: Any, num_classes: int) -> tuple[nn.Module, list[str] | None, str]:
    """(model from ``cfg.name``, its class names or None, default feat module)."""
    try:
        from transformers import AutoModelForSemanticSegmentation
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    local = Path(cfg.name).is_dir()
    model = AutoModelForSemanticSegmentation.from_pretrained(
        cfg.name, local_files_only=local, trust_remote_code=False, **cfg.options)
    names = class_names(model.config) or cfg.class_names
    return model, names, default_feat_module(model, model.config.num_labels)
