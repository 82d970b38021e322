"""The ``DATASETS`` registry and :func:`build_dataset`."""

from __future__ import annotations

from typing import Any

from segkd.data.base import SegDataset, Transform
from segkd.registry import Registry

DATASETS: Registry[SegDataset] = Registry("dataset")


def build_dataset(
    name: str, root: str | None, split: str, transform: Transform | None = None, **options: Any
) -> SegDataset:
    """Build the dataset registered as ``name`` for ``split`` of the data at ``root``.

    ``options`` are dataset specific (e.g. ``num_samples`` for ``synthetic``, ``num_classes`` for ``folder``);
    an option the dataset does not take raises ValueError naming it.
    """
    factory = DATASETS.get(name)
    try:
        return factory(root=root, split=split, transform=transform, **options)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise ValueError(f"dataset '{name}': {err}".replace("__init__() ", "")) from err
        raise
