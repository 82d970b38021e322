"""torchvision segmentation models as teachers: DeepLabV3, FCN and LR-ASPP.

``name``: ``deeplabv3_resnet50``, ``deeplabv3_resnet101``, ``deeplabv3_mobilenet_v3_large``,
``fcn_resnet50``, ``fcn_resnet101``, ``lraspp_mobilenet_v3_large``. Weights, in order:

* ``checkpoint: FILE``: a state dict saved from the torchvision model (``torch.save(model.state_dict())``),
  loaded with ``weights_only=True``; the class count comes from the file, ``aux_classifier.*`` keys are
  accepted (the model is then built with its auxiliary classifier, unused by the teacher);
* ``pretrained: true``: torchvision's default weights for ``name`` taken from torchvision's cache
  (``$TORCH_HOME/hub/checkpoints``) only, never downloaded; their ``categories`` are the class names
  (the 21 VOC classes, ``__background__`` first);
* neither: random initialisation (tests).

Scores: ``model(x)["out"]``, already upsampled to the input size by torchvision. Default ``feat``: the input
of the last 1x1 classifier conv, i.e. the pre-classifier embedding: ``classifier.4:input`` (DeepLabV3:
ASPP + 3x3 conv-BN-ReLU, 256 channels; FCN: 3x3 conv-BN-ReLU-Dropout, C_in/4 channels) and
``classifier.high_classifier:input`` for LR-ASPP (128 channels at 1/16; the low-level branch is a separate
1x1 classifier added to it). Input normalisation: ImageNet mean/std on RGB (torchvision's transforms).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

NAMES = ("deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large", "fcn_resnet50",
         "fcn_resnet101", "lraspp_mobilenet_v3_large")


def default_feat_module(name: str) -> str:
    """Pre-classifier embedding: input of the final 1x1 conv (see the module docstring)."""
    return "classifier.high_classifier:input" if name.startswith("lraspp") else "classifier.4:input"


def scores(network: nn.Module, images: Tensor) -> Tensor:
    """Class scores (N, K, H, W) of a torchvision segmentation model."""
    return network(images)["out"]


def cached_weights(name: str) -> tuple[dict[str, Tensor], list[str]]:
    """(state dict, categories) of torchvision's default weights for ``name`` from its local cache."""
    from torchvision.models import get_model_weights

    from segkd.models.external.common import load_weights_only

    weights = get_model_weights(name).DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if not path.is_file():
        raise FileNotFoundError(
            f"torchvision teacher '{name}': {weights} is not in torchvision's cache ({path}); segkd never "
            "downloads weights: put the file there, or set distill.teacher.checkpoint to a local copy")
    return load_weights_only(path), list(weights.meta["categories"])


def _state_of(obj: Any, source: str) -> dict[str, Tensor]:
    from segkd.models.checkpoints import CheckpointError

    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or "classifier.4.weight" not in obj and "classifier.low_classifier.weight" \
            not in obj:
        raise CheckpointError(f"{source}: not a torchvision segmentation state dict (no classifier weights)")
    return obj


def _num_classes(state: dict[str, Tensor]) -> int:
    key = "classifier.4.weight" if "classifier.4.weight" in state else "classifier.low_classifier.weight"
    return int(state[key].shape[0])


def build(cfg: Any, num_classes: int) -> tuple[nn.Module, list[str] | None, str]:
    """(network, its class names or None, default feat module) for ``cfg`` (see the module docstring)."""
    from torchvision.models import get_model

    from segkd.models.external.common import load_exact, load_weights_only

    if cfg.name not in NAMES:
        raise ValueError(f"torchvision teacher '{cfg.name}': supported are {', '.join(NAMES)}")
    state, names = None, cfg.class_names
    if cfg.checkpoint:
        state = _state_of(load_weights_only(cfg.checkpoint), str(cfg.checkpoint))
    elif cfg.pretrained:
        state, names = cached_weights(cfg.name)
    k = _num_classes(state) if state is not None else num_classes
    aux = state is not None and any(key.startswith("aux_classifier.") for key in state)
    kwargs = {"aux_loss": aux} if not cfg.name.startswith("lraspp") else {}
    model = get_model(cfg.name, weights=None, weights_backbone=None, num_classes=k, **kwargs)
    if state is not None:
        load_exact(model, state, f"{cfg.checkpoint or 'torchvision cache'} ({cfg.name})")
    return model, names, default_feat_module(cfg.name)
