"""Build datasets from a :class:`~segkd.config_schema.DataConfig`."""

from __future__ import annotations

from segkd.config_schema import DataConfig, InputConfig
from segkd.data.base import SegDataset
from segkd.data.registry import build_dataset
from segkd.data.transforms import build_transforms


def build_dataset_from_config(
    cfg: DataConfig, split: str, train: bool, convention: InputConfig | None = None
) -> SegDataset:
    """Dataset ``cfg.name`` at ``cfg.root`` for ``split`` with the training or evaluation transform, whose
    images come out in the student's input ``convention`` (``model.input``; None: the default).

    ``cfg.options`` are passed to the dataset (e.g. ``num_samples``, ``image_size`` for ``synthetic``).
    """
    transform = build_transforms(cfg, train, convention)
    return build_dataset(cfg.name, cfg.root, split, transform=transform, **cfg.options)
