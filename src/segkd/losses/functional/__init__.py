"""Pure distillation functions: tensors in, scalar out, no module state.

Each ``segkd.losses`` module (``LOSSES`` registry) is a thin wrapper that owns parameters (adapters,
discriminators) and calls one of these. Functions of modules written separately (``cirkd``, ``ka``) are
re-exported when those modules exist.
"""

import importlib

from segkd.losses.functional.common import align_to_larger, downsample_labels, resize_to, valid_mask
from segkd.losses.functional.cwd import channel_wise_loss
from segkd.losses.functional.dist import dist_loss, pearson_correlation
from segkd.losses.functional.feature import attention_map, attention_transfer_loss, fitnet_loss
from segkd.losses.functional.ifvd import ifv_map, ifvd_loss
from segkd.losses.functional.kd import pixel_kd_loss
from segkd.losses.functional.skd import (
    adversarial_d_loss,
    adversarial_g_loss,
    gradient_penalty,
    l2_normalize_channels,
    pairwise_affinity_loss,
    skd_pool,
)

__all__ = [
    "adversarial_d_loss",
    "adversarial_g_loss",
    "align_to_larger",
    "attention_map",
    "attention_transfer_loss",
    "channel_wise_loss",
    "dist_loss",
    "downsample_labels",
    "fitnet_loss",
    "gradient_penalty",
    "ifv_map",
    "ifvd_loss",
    "l2_normalize_channels",
    "pairwise_affinity_loss",
    "pearson_correlation",
    "pixel_kd_loss",
    "resize_to",
    "skd_pool",
    "valid_mask",
]

_OPTIONAL_MODULES = ("cirkd", "ka", "dsd")


def _public_functions(module) -> list[str]:
    """``module.__all__`` or, failing that, the public callables defined in the module itself."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and callable(obj)
            and getattr(obj, "__module__", None) == module.__name__]


for _name in _OPTIONAL_MODULES:
    _module = importlib.import_module(f"{__name__}.{_name}")
    for _fn in _public_functions(_module):
        globals()[_fn] = getattr(_module, _fn)
        __all__.append(_fn)
