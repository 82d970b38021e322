"""Datasets (native layouts, ``folder``, ``synthetic``, ``digit_scenes``), transforms and loaders.

Importing this package registers every dataset in :data:`DATASETS`.
"""

from segkd.data import (  # noqa: F401  (register)
    ade20k,
    camvid,
    cityscapes,
    cocostuff,
    digit_scenes,
    folder,
    pascal_context,
    synthetic,
    voc,
)
from segkd.data.base import IGNORE_INDEX, DatasetError, SegDataset
from segkd.data.factory import build_dataset_from_config
from segkd.data.loaders import build_train_loader, build_val_loader
from segkd.data.registry import DATASETS, build_dataset
from segkd.data.transforms import EvalTransform, TrainTransform, build_transforms

__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "DatasetError",
    "EvalTransform",
    "SegDataset",
    "TrainTransform",
    "build_dataset",
    "build_dataset_from_config",
    "build_train_loader",
    "build_val_loader",
    "build_transforms",
]
