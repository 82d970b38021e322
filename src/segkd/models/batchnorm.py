"""Pre-training check: BatchNorm layers that see one value per channel when the batch holds one image.

Image-level pooling branches (DeepLabV3's ASPP image pooling, PSPNet's 1x1 pyramid bin) average the map to
(N, C, 1, 1) and then apply BatchNorm, which in train mode normalises over N * 1 * 1 values per channel. With
a batch of one image that is a single value and PyTorch stops with "Expected more than 1 value per channel
when training". The reference CIRKD code trains these heads with ``nn.SyncBatchNorm`` across 8 GPUs (2
images each), so the statistics span every process; SyncBatchNorm accepts one value per process when the
world size is >= 2. segkd converts the student to SyncBatchNorm under torchrun on CUDA, so the only failing
case is a per-process batch of 1 with plain BatchNorm: :func:`check_batch_size` names the setting instead.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from segkd.models.heads import ASPPPooling


class BatchSizeError(ValueError):
    """A per-process batch too small for a pooled BatchNorm; the message names ``data.batch_size``."""


def _is_global_pool(module: nn.Module) -> bool:
    size = getattr(module, "output_size", None)
    return isinstance(module, nn.AdaptiveAvgPool2d) and size in (1, (1, 1), [1, 1])


def pooled_batch_norms(model: nn.Module) -> Iterator[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """``(name, BN)`` for every BatchNorm applied to a globally pooled (N, C, 1, 1) map.

    Found structurally: an ASPP image-pooling branch, or an ``nn.Sequential`` whose global
    ``AdaptiveAvgPool2d(1)`` is followed by a BatchNorm (PSPNet's bin-1 stage: pool, conv1x1, BN, ReLU).
    """
    for name, module in model.named_modules():
        if isinstance(module, ASPPPooling):
            yield from ((f"{name}.conv.{n}", m) for n, m in module.conv.named_modules() if _is_bn(m))
        elif isinstance(module, nn.Sequential) and module and _is_global_pool(module[0]):
            yield from ((f"{name}.{n}", m) for n, m in module.named_children() if _is_bn(m))


def _is_bn(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def check_batch_size(model: nn.Module, batch_size: int, world_size: int = 1) -> None:
    """Raise :class:`BatchSizeError` if training ``model`` with ``batch_size`` images per process would fail.

    Only a per-process batch of 1 can fail, and only for a pooled BatchNorm that is not a SyncBatchNorm
    spanning >= 2 processes (which is how the reference trains with 1-2 images per GPU).
    """
    if batch_size > 1:
        return
    for name, bn in pooled_batch_norms(model):
        if isinstance(bn, nn.SyncBatchNorm) and world_size > 1:
            continue
        raise BatchSizeError(
            f"config: data.batch_size={batch_size} (images per process) is too small for "
            f"{type(model).__name__} '{getattr(model, 'name', '') or 'student'}': its BatchNorm '{name}' "
            "follows a global pooling, which needs at least 2 values per channel in training; set "
            "data.batch_size >= 2 (or train under torchrun on CUDA with >= 2 GPUs, where SyncBatchNorm "
            "pools the statistics of every process)"
        )
