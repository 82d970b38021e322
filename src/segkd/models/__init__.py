"""segkd models: backbones (timm), heads (ASPP, PSP, FCN), the Segmentor, the zoo, checkpoints, profiling.

Public API (see docs/ARCHITECTURE.md):
``build_model``, ``build_model_from_config``, ``MODELS``, ``Segmentor``, ``SegOutput``,
``load_segmentor_checkpoint``.
"""

from __future__ import annotations

from segkd.config_schema import ModelConfig
from segkd.models import seed_networks  # noqa: F401,E402  (registers DeepLabV3+, ESPNet, MobileNetV2Plus)
from segkd.models.checkpoints import load_segmentor_checkpoint
from segkd.models.outputs import SegOutput
from segkd.models.segmentor import Segmentor
from segkd.models.zoo import MODELS, build_model

__all__ = [
    "MODELS",
    "SegOutput",
    "Segmentor",
    "build_model",
    "build_model_from_config",
    "load_segmentor_checkpoint",
]


def build_model_from_config(
    cfg: ModelConfig, num_classes: int | None = None, key: str = "model"
) -> Segmentor:
    """Build ``cfg.name`` (with ``cfg.pretrained`` backbone weights) and load ``cfg.checkpoint`` if set.

    ``num_classes`` is the dataset's class count; ``cfg.num_classes`` overrides it when the dataset does not
    give one, and the two must agree when both are set. ``key``: the config section ``cfg`` is
    (``model`` or ``distill.teacher``), named in errors.
    """
    k = cfg.num_classes if cfg.num_classes is not None else num_classes
    if k is None:
        raise ValueError(f"model {cfg.name}: num_classes is unknown (set {key}.num_classes)")
    if num_classes is not None and cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise ValueError(
            f"{key}.num_classes={cfg.num_classes} disagrees with the dataset's {num_classes} classes"
        )
    model_keys = {"name", "num_classes", "pretrained", "output_stride", "head_channels", "aux"}
    clash = sorted(set(cfg.options) & model_keys)
    if clash:
        raise ValueError(f"{key}.options.{clash[0]}: set {key}.{clash[0]} instead (not inside {key}.options)")
    model = build_model(
        cfg.name,
        k,
        pretrained=cfg.pretrained,
        output_stride=cfg.output_stride,
        head_channels=cfg.head_channels,
        aux=cfg.aux,
        **cfg.options,
    )
    if cfg.checkpoint:
        report = load_segmentor_checkpoint(model, cfg.checkpoint, fmt=cfg.checkpoint_format)
        model.checkpoint_meta = report["meta"]  # a segkd checkpoint's meta (its input convention); else {}
    return model
