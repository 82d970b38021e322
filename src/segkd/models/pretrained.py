"""Load a local ImageNet checkpoint into a backbone (``model.pretrained: /path/file.pth``).

Accepted layouts: timm's own (keys as in ``timm.create_model(name)``), and the reference CIRKD ImageNet files
(``resnet18-imagenet.pth`` / ``resnet101-imagenet.pth`` with deep-stem keys ``conv1/bn1/conv2/bn2/conv3/bn3/
layer*/fc``, ``mobilenetv2-imagenet.pth`` with ``features.N``), mapped with the same rules as whole CIRKD
segmentors (:mod:`segkd.models.checkpoints`). Classifier weights (``fc``, ``classifier``, ``conv_head``) are
expected to be unused; any other missing or unexpected key is reported, and a shape mismatch or a file
matching nothing is an error.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import Tensor, nn

from segkd.checkpoint_io import read_checkpoint
from segkd.models.checkpoints import CheckpointError, _unwrap, cirkd_backbone_key

_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "conv_head.", "bn2.", "head.", "last_linear.")


def to_backbone_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename CIRKD ImageNet keys to timm keys; timm-layout files pass through unchanged."""
    if "conv2.weight" in state and "conv3.weight" in state and any(k.startswith("layer1.") for k in state):
        return {cirkd_backbone_key(k): v for k, v in state.items()}  # ResNetV1b deep stem
    if any(k.startswith("features.") for k in state):
        return {
            cirkd_backbone_key("net." + k) if k.startswith("features.") else k: v for k, v in state.items()
        }
    return dict(state)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load ImageNet weights from ``path`` into ``backbone``; returns ``{"missing", "unexpected"}``."""
    state, _ = _unwrap(read_checkpoint(path), str(path))
    state = to_backbone_keys(state)
    own = backbone.state_dict()
    matched = {k: v for k, v in state.items() if k in own}
    if not matched:
        raise CheckpointError(
            f"{path}: no key matches the backbone (file keys e.g. {list(state)[:3]}, "
            f"backbone keys e.g. {list(own)[:3]})"
        )
    bad = [
        f"{k}: file {tuple(v.shape)} vs backbone {tuple(own[k].shape)}"
        for k, v in matched.items()
        if v.shape != own[k].shape
    ]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch for {', '.join(bad[:8])}")
    missing = [k for k in own if k not in matched]
    unexpected = [k for k in state if k not in own and not k.startswith(_CLASSIFIER_PREFIXES)]
    if missing or unexpected:
        warnings.warn(
            f"{path}: {len(missing)} backbone keys missing {missing[:5]}, {len(unexpected)} "
            f"unexpected {unexpected[:5]}",
            stacklevel=2,
        )
    backbone.load_state_dict(matched, strict=False)
    return {"missing": missing, "unexpected": unexpected}
