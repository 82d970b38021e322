"""Process-group helpers shared by the engine and the losses.

Everything here degrades gracefully to a single process: when no process group is initialised,
``rank() == 0``, ``world_size() == 1`` and the collective helpers return their input unchanged, so code
written once runs under plain ``python`` and under ``torchrun`` alike (the reference CIRKD code crashed on
a single GPU because it assumed an initialised group).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def is_dist_initialized() -> bool:
    """True when a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if is_dist_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_dist_initialized() else 1


def local_rank() -> int:
    """Rank of this process on its node, from torchrun's ``LOCAL_RANK`` (0 when absent)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0 (the process that writes files and prints)."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables (``RANK``, ``WORLD_SIZE``) are set."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup_distributed(device: str = "auto", timeout_s: int = 1800) -> torch.device:
    """Initialise the process group from torchrun's environment and return this process's device.

    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``. Backend: ``nccl`` on GPU,
    ``gloo`` on CPU. Without torchrun variables no group is created (single process).
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ValueError(f"train.device={device!r} but CUDA is not available")
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and not is_dist_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    if not use_cuda:
        return torch.device("cpu")
    if is_dist_initialized():
        return torch.device("cuda", local_rank())
    return torch.device(device if device.startswith("cuda:") else "cuda")


def cleanup_distributed() -> None:
    """Destroy the process group if one exists."""
    if is_dist_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Synchronise all processes (no-op in a single process)."""
    if is_dist_initialized():
        dist.barrier()


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` in place across processes (``sum``, ``mean``, ``max`` or ``min``) and return it."""
    if not is_dist_initialized():
        return tensor
    ops = {
        "sum": dist.ReduceOp.SUM,
        "max": dist.ReduceOp.MAX,
        "min": dist.ReduceOp.MIN,
        "mean": dist.ReduceOp.SUM,
    }
    if op not in ops:
        raise ValueError(f"unknown reduce op {op!r}; use one of {sorted(ops)}")
    dist.all_reduce(tensor, op=ops[op])
    if op == "mean":
        tensor /= world_size()
    return tensor


def all_gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equally-shaped ``tensor`` from every process along dim 0 (no gradient)."""
    if not is_dist_initialized():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def sync_norm_buffers(module: torch.nn.Module, src: int = 0) -> int:
    """Copy rank ``src``'s normalisation buffers (BatchNorm running mean/var, batch counter) to every rank.

    Why: DDP broadcasts rank 0's buffers at the start of each *training* forward, but that forward then
    updates every rank's copy with its own batch, so after any training step the ranks hold different
    running statistics (plain BatchNorm on CPU/gloo, or any BatchNorm not converted to SyncBN). Evaluating
    or checkpointing then would use rank-local statistics: the DDP-reduced validation mIoU would not be the
    mIoU of the weights rank 0 saves. The engine calls this before every validation and every checkpoint,
    so all ranks evaluate, and rank 0 saves, exactly the statistics of rank ``src`` (DDP's own convention).
    Returns the number of buffers broadcast (0 without a process group).
    """
    if not is_dist_initialized():
        return 0
    count = 0
    for sub in module.modules():
        if isinstance(sub, torch.nn.modules.batchnorm._NormBase) and sub.track_running_stats:
            for buf in sub.buffers(recurse=False):
                if buf is not None:
                    dist.broadcast(buf.data, src=src)
                    count += 1
    return count


def broadcast_parameters(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s parameter values (a module built on each rank, outside DDP)."""
    if not is_dist_initialized():
        return
    for param in module.parameters():
        dist.broadcast(param.data, src=src)


def average_gradients(module: torch.nn.Module) -> None:
    """Replace each parameter's gradient by its mean over the ranks (what DDP does in ``backward``)."""
    for param in module.parameters():
        if param.grad is not None:
            all_reduce(param.grad, "mean")


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send a picklable object from ``src`` to every process and return it."""
    if not is_dist_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward all-reduces (sums) the gathered gradient and keeps the
    local slot, i.e. d(sum_r L_r)/d x_local.

    Hand-written because :func:`torch.distributed.nn.functional.all_gather` is deprecated and, on gloo, its
    all-to-all backward returned wrong gradients for non-contiguous incoming gradients (found by
    tests/dist_cirkd_check.py).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.local = tensor.shape[0]
        return all_gather_tensor(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[rank() * ctx.local : (rank() + 1) * ctx.local]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equally-shaped ``tensor`` from every process along dim 0, keeping autograd.

    Backward gives each process the gradient of its own slot summed over all processes (the gradient of
    the sum of all processes' losses). With DDP's gradient averaging this yields exactly the gradient of the
    loss averaged over processes (unlike the SimCLR-style gather that keeps only the local process's
    gradient). Returns ``tensor`` unchanged without a process group.
    """
    if not is_dist_initialized():
        return tensor
    return _AllGatherWithGrad.apply(tensor.contiguous())
