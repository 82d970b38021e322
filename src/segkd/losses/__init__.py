"""Distillation losses: pure functions in :mod:`segkd.losses.functional`, modules in :data:`LOSSES`.

Importing this package registers every method module listed in ``METHOD_MODULES``.
"""

import importlib

from segkd.losses.base import LOSSES, DistillBatch, DistillLoss, DistillSpec

METHOD_MODULES = ("kd", "skd", "ifvd", "cwd", "feature", "dist", "cirkd", "ka", "dsd", "pseudo_label")

for _name in METHOD_MODULES:
    importlib.import_module(f"segkd.losses.{_name}")

__all__ = ["LOSSES", "DistillBatch", "DistillLoss", "DistillSpec", "build_loss"]


def build_loss(name: str, spec: DistillSpec, **options) -> DistillLoss:
    """Build the loss registered as ``name`` for models described by ``spec``."""
    return LOSSES.build(name, spec=spec, **options)
