"""Per-class ring-buffer memory of embeddings (the teacher queues of CIRKD).

State lives in registered buffers (``queue``, ``ptr``) so that it travels with ``state_dict`` into
checkpoints and is restored on resume.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def rank_within_group(groups: Tensor) -> Tensor:
    """For a 1-d tensor of group ids, the 0-based occurrence index of each entry within its group.

    Order is preserved: the k-th entry (in tensor order) of a group gets rank k. Vectorised via a stable
    sort (torch has no grouped cumcount).
    """
    if groups.numel() == 0:
        return groups.clone()
    order = torch.sort(groups, stable=True).indices
    sorted_groups = groups[order]
    pos = torch.arange(groups.numel(), device=groups.device)
    is_start = torch.ones_like(sorted_groups, dtype=torch.bool)
    is_start[1:] = sorted_groups[1:] != sorted_groups[:-1]
    group_start = torch.cummax(torch.where(is_start, pos, torch.zeros_like(pos)), dim=0).values
    ranks = torch.empty_like(pos)
    ranks[order] = pos - group_start
    return ranks


class ClassQueue(nn.Module):
    """``num_classes`` ring buffers of ``size`` L2-normalised ``dim``-d vectors each.

    Buffers: ``queue`` (K, size, dim), initialised with random unit vectors as in the reference code (so a
    contrast set drawn before a class's buffer is full contains random directions), and ``ptr`` (K,), the
    next write slot of each class.

    Difference from the reference pixel queue: when a write crosses the end of a buffer it wraps around
    (slot ``(ptr + k) % size``); the reference instead rewrote the *last* K slots and reset the pointer to
    0. With the defaults (16 entries per write, size 20000 = 1250 * 16) the two coincide whenever 16
    pixels are available.
    """

    def __init__(self, num_classes: int, size: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        if num_classes < 1 or size < 1 or dim < 1:
            raise ValueError(
                f"ClassQueue: num_classes, size and dim must be >= 1, got {num_classes}, {size}, {dim}"
            )
        gen = torch.Generator().manual_seed(seed)
        init = F.normalize(torch.randn(num_classes, size, dim, generator=gen), p=2, dim=2)
        self.register_buffer("queue", init)
        self.register_buffer("ptr", torch.zeros(num_classes, dtype=torch.long))

    @property
    def size(self) -> int:
        return self.queue.shape[1]

    @torch.no_grad()
    def push(self, values: Tensor, classes: Tensor) -> None:
        """Write ``values`` (n, dim) into the buffers of ``classes`` (n,), in order, wrapping around.

        Fully vectorised (one scatter for all classes). When more than ``size`` entries of one class come
        at once, only its last ``size`` are kept (earlier ones would be overwritten anyway).
        """
        if values.shape[0] != classes.shape[0]:
            raise ValueError(f"ClassQueue.push: {values.shape[0]} values but {classes.shape[0]} classes")
        if values.shape[0] == 0:
            return
        classes = classes.to(self.ptr.device, torch.long)
        ranks = rank_within_group(classes)
        counts = torch.bincount(classes, minlength=self.queue.shape[0])
        keep = ranks >= counts[classes] - self.size
        slots = (self.ptr[classes] + ranks) % self.size
        self.queue[classes[keep], slots[keep]] = values[keep].to(self.queue.dtype)
        self.ptr.copy_((self.ptr + counts) % self.size)

    @torch.no_grad()
    def push_block_reference(self, values: Tensor, cls: int) -> None:
        """Write ``values`` (k, dim) into class ``cls`` as CIRKD's pixel queue does (``enqueue: reference``).

        If ``ptr + k >= size`` the block overwrites the *last* k slots and the pointer resets to 0;
        otherwise it fills ``ptr .. ptr + k - 1`` and the pointer advances by k.
        """
        k = values.shape[0]
        if k == 0:
            return
        if k > self.size:
            raise ValueError(f"ClassQueue.push_block_reference: {k} values exceed the queue size {self.size}")
        ptr = int(self.ptr[cls])
        if ptr + k >= self.size:
            self.queue[cls, self.size - k:] = values.to(self.queue.dtype)
            self.ptr[cls] = 0
        else:
            self.queue[cls, ptr:ptr + k] = values.to(self.queue.dtype)
            self.ptr[cls] = ptr + k

    def sample(self, per_class: int, generator: torch.Generator | None = None) -> Tensor:
        """``per_class`` entries of every class, (K * per_class, dim), classes in order.

        As in the reference, one random set of slot indices is drawn and used for every class.
        """
        n = min(per_class, self.size)
        index = torch.randperm(self.size, generator=generator, device=self.queue.device)[:n]
        return self.queue[:, index].reshape(-1, self.queue.shape[2])
