"""Load whole-segmentor weights: segkd checkpoints and the reference CIRKD layout.

segkd checkpoint: ``{"model": state_dict, "meta": {"num_classes": K, ...}, ...}`` (docs/ARCHITECTURE.md);
a bare segkd state dict (keys ``backbone.* / head.* / aux_head.*``) is accepted too.

CIRKD layout (models released with the reference code): keys ``pretrained.*`` (backbone), ``head.*``,
``auxlayer.*``. The mapping is exact for the benchmark networks; the architectures match layer by layer:

* ResNetV1b deep stem ``pretrained.conv1/bn1/conv2/bn2/conv3/bn3`` = timm's ``conv1.0/conv1.1/conv1.3/
  conv1.4/conv1.6/bn1``; layers keep their names. Dilation: CIRKD layer3 block 0 uses dilation 1 on its
  first 3x3 and 2 afterwards (``previous_dilation``), layer4 block 0 uses 2 then 4: timm's
  ``first_dilation`` scheme is identical (BasicBlock: conv1 first_dilation, conv2 dilation; Bottleneck:
  the 3x3 conv2 first_dilation).
* MobileNetV2 ``pretrained.net.features.0`` = timm ``conv_stem/bn1``; ``features.1..17`` = timm
  ``blocks.s.j`` in order (stage sizes 1, 2, 3, 4, 3, 3, 1); CIRKD's ``_nostride_dilate`` (the strided
  3x3 of features 7 / 14 gets dilation 1 / 2, the rest 2 / 4) equals timm's output_stride=8 dilation.
* Heads: ``head.aspp.b0`` -> ``head.aspp.convs.0``, ``b1..b3.block`` -> ``convs.1..3``, ``b4.gap.1/2`` ->
  ``aspp.pool.conv.0/1``, ``project`` unchanged, ``head.block.0/1`` -> ``head.bottleneck.0/1``,
  ``head.block.4`` (DeepLabV3) or ``head.classifier`` (PSP) -> ``head.classifier``; ``head.psp.convN.0/1``
  -> ``head.psp.stages.{N-1}.1/2``; ``auxlayer.block.0/1/4`` -> ``aux_head.bottleneck.0/1`` /
  ``aux_head.classifier``. Pooling branches upsample with bilinear ``align_corners=True`` as in CIRKD.

Known discrepancy: none in the computed function; BatchNorm eps/momentum are PyTorch defaults on both sides.

Authors' layout (format ``authors``, detected automatically for models that carry an ``authors_to_segkd``
renaming function: ESPNet-C / ESPNet from sacmehta/ESPNet, MobileNetV2Plus from LightNet): the model renames
the keys; BatchNorm ``num_batches_tracked`` buffers, absent from those PyTorch 0.3/0.4-era releases, are
set to 0 (they do not change the computed function when ``momentum`` is set). LightNet's
``{"model_state": ...}`` wrapper is unwrapped like ``model`` / ``state_dict``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from segkd.checkpoint_io import read_checkpoint

Format = Literal["auto", "segkd", "cirkd", "authors"]

_MBV2_STAGE_SIZES = (1, 2, 3, 4, 3, 3, 1)
_RESNET_STEM = {
    "conv1": "conv1.0",
    "bn1": "conv1.1",
    "conv2": "conv1.3",
    "bn2": "conv1.4",
    "conv3": "conv1.6",
    "bn3": "bn1",
}
_MBV2_EXPAND = {"0": "conv_pw", "1": "bn1", "3": "conv_dw", "4": "bn2", "6": "conv_pwl", "7": "bn3"}
_MBV2_DEPTHWISE = {"0": "conv_dw", "1": "bn1", "3": "conv_pw", "4": "bn2"}
_HEAD_RULES = [
    (r"^head\.aspp\.b0\.", "head.aspp.convs.0."),
    (r"^head\.aspp\.b([123])\.block\.", r"head.aspp.convs.\1."),
    (r"^head\.aspp\.b4\.gap\.1\.", "head.aspp.pool.conv.0."),
    (r"^head\.aspp\.b4\.gap\.2\.", "head.aspp.pool.conv.1."),
    (r"^head\.block\.([01])\.", r"head.bottleneck.\1."),
    (r"^head\.block\.4\.", "head.classifier."),
    (r"^auxlayer\.block\.([01])\.", r"aux_head.bottleneck.\1."),
    (r"^auxlayer\.block\.4\.", "aux_head.classifier."),
]


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the file and the offending keys."""


def cirkd_backbone_key(key: str) -> str:
    """Map a CIRKD backbone key (without the ``pretrained.`` prefix) to the timm ``features_only`` key."""
    head, _, rest = key.partition(".")
    if head in _RESNET_STEM:
        return f"{_RESNET_STEM[head]}.{rest}"
    match = re.match(r"^net\.features\.(\d+)\.(.*)$", key)
    if match is None:
        return key  # ResNet layer1..4 keep their names
    index, rest = int(match.group(1)), match.group(2)
    if index == 0:
        return {"0": "conv_stem", "1": "bn1"}[rest.split(".")[0]] + "." + rest.split(".", 1)[1]
    stage, block = _mbv2_position(index - 1)
    layer, param = re.match(r"^conv\.(\d+)\.(.*)$", rest).groups()
    table = _MBV2_DEPTHWISE if index == 1 else _MBV2_EXPAND
    return f"blocks.{stage}.{block}.{table[layer]}.{param}"


def _mbv2_position(flat: int) -> tuple[int, int]:
    for stage, size in enumerate(_MBV2_STAGE_SIZES):
        if flat < size:
            return stage, flat
        flat -= size
    raise KeyError(f"MobileNetV2 block index {flat} out of range")


def cirkd_to_segkd(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename every key of a CIRKD segmentation state dict to the segkd layout (see module docstring)."""
    out = {}
    for key, value in state.items():
        if key.startswith("pretrained."):
            new = "backbone." + cirkd_backbone_key(key[len("pretrained.") :])
        elif key.startswith("head.psp.conv"):
            n, index, param = re.match(r"^head\.psp\.conv(\d)\.(\d)\.(.*)$", key).groups()
            new = f"head.psp.stages.{int(n) - 1}.{int(index) + 1}.{param}"
        else:
            new = rename_by_rules(key, _HEAD_RULES)
        out[new] = value
    return out


def rename_by_rules(key: str, rules: Sequence[tuple[str, str]]) -> str:
    """``key`` rewritten by the first ``(pattern, replacement)`` rule that matches it (unchanged if none)."""
    for pattern, repl in rules:
        new, count = re.subn(pattern, repl, key)
        if count:
            return new
    return key


def detect_format(
    state: Mapping[str, Any], model: nn.Module | None = None
) -> Literal["segkd", "cirkd", "authors"]:
    """``cirkd`` when keys start with ``pretrained.`` / ``auxlayer.``, ``segkd`` when with ``backbone.``,
    ``authors`` otherwise when ``model`` has an ``authors_to_segkd`` key renaming."""
    if any(k.startswith("backbone.") for k in state):
        return "segkd"
    if any(k.startswith(("pretrained.", "auxlayer.")) for k in state):
        return "cirkd"
    if model is not None and hasattr(model, "authors_to_segkd"):
        return "authors"
    raise CheckpointError(
        "cannot tell the checkpoint layout: no 'backbone.*' (segkd) or 'pretrained.*' (CIRKD) keys"
    )


def _unwrap(obj: Any, source: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state dict, meta) from a checkpoint object; strips DataParallel's ``module.`` prefix."""
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        meta = dict(obj.get("meta") or {})
        obj = obj["model"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and "model_state" in obj and isinstance(obj["model_state"], Mapping):
        obj = obj["model_state"]  # LightNet
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: not a state dict or a segkd checkpoint (got {type(obj).__name__})")
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}
    return state, meta


def _check_num_classes(
    model: nn.Module, state: Mapping[str, Tensor], meta: Mapping[str, Any], source: str
) -> None:
    expected = getattr(model, "num_classes", None)
    found = meta.get("num_classes")
    weight = state.get("head.classifier.weight")
    if found is None and weight is not None:
        found = weight.shape[0]
    if expected is not None and found is not None and int(found) != int(expected):
        raise CheckpointError(
            f"{source}: checkpoint has {found} classes but the model was built with num_classes={expected}"
        )


def load_segmentor_checkpoint(
    model: nn.Module, path_or_state_dict: str | Path | Mapping[str, Any], fmt: Format = "auto"
) -> dict[str, Any]:
    """Load whole-segmentor weights into ``model`` (in place) and return a report.

    Every key must match by name and shape, except that auxiliary-head weights (training only) may be absent
    from the file or from the model (a warning says so). Returns ``{"format", "meta", "skipped_aux"}``.
    Raises :class:`CheckpointError` naming the file and the missing / unexpected / mis-shaped keys.
    """
    is_path = isinstance(path_or_state_dict, (str, Path))
    source = str(path_or_state_dict) if is_path else "state dict"
    obj = read_checkpoint(path_or_state_dict) if is_path else path_or_state_dict
    state, meta = _unwrap(obj, source)
    layout = detect_format(state, model) if fmt == "auto" else fmt
    if layout == "cirkd":
        state = cirkd_to_segkd(state)
    elif layout == "authors":
        state = authors_to_segkd(model, state, source)
    elif layout != "segkd":
        raise ValueError(f"checkpoint format must be auto, segkd, cirkd or authors, got {fmt!r}")
    _check_num_classes(model, state, meta, source)
    skipped = _match_or_raise(model, state, source, layout)
    model.load_state_dict(state, strict=False)
    return {"format": layout, "meta": meta, "skipped_aux": skipped}


def authors_to_segkd(model: nn.Module, state: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """Rename an authors'-layout state dict with ``model.authors_to_segkd`` and add the BatchNorm
    ``num_batches_tracked`` buffers the old releases lack (value 0)."""
    convert = getattr(model, "authors_to_segkd", None)
    if convert is None:
        name = getattr(model, "name", "")
        raise CheckpointError(f"{source}: model '{name}' has no authors' checkpoint layout")
    out = convert(state)
    for key in model.state_dict():
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.tensor(0, dtype=torch.long)
    return out


def _match_or_raise(model: nn.Module, state: dict[str, Tensor], source: str, layout: str) -> list[str]:
    """Drop aux-only differences (with a warning) and raise on any other key or shape mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    aux = [k for k in missing + unexpected if k.startswith("aux_head.")]
    for key in unexpected:
        if key.startswith("aux_head."):
            del state[key]
    missing = [k for k in missing if not k.startswith("aux_head.")]
    unexpected = [k for k in unexpected if not k.startswith("aux_head.")]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source} ({layout} layout) does not fit {type(model).__name__} "
            f"'{getattr(model, 'name', '')}': missing {_short(missing)}; unexpected {_short(unexpected)}; "
            f"shape mismatch {_short(shapes)}"
        )
    if aux:
        warnings.warn(
            f"{source}: auxiliary-head weights differ between file and model; skipped {len(aux)} "
            "aux keys (the aux head is used in training only)",
            stacklevel=3,
        )
    return aux


def _short(items: list[str], limit: int = 8) -> str:
    if not items:
        return "none"
    more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
