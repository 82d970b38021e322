"""Peak memory of one piece of work: CUDA ``max_memory_allocated``, or the peak RSS growth on CPU.

CPU method (documented in docs/BENCHMARKS.md): PyTorch keeps no statistics for its CPU allocator, and
``tracemalloc`` does not see tensor memory, so we use the kernel's resident-set high-water mark. Writing
``5`` to ``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS (Linux >= 4.0); the peak of the
work is then ``VmHWM`` after it minus ``VmRSS`` before it. That counts every byte the process touched
(tensors, autograd buffers, allocator slack), so it is an honest upper bound of the tensor peak. To keep
successive measurements in one process independent, :func:`pin_mmap_threshold` fixes glibc's mmap
threshold at 64 KiB: every larger buffer is ``mmap``-ed and returned to the kernel when freed, instead of
staying resident in the heap where a later measurement would reuse it without raising the peak.
On systems without ``/proc`` the CPU value is ``None`` (reported as n/a).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter id


def pin_mmap_threshold(nbytes: int = 64 * 1024) -> bool:
    """Fix glibc's (otherwise self-raising) mmap threshold; False where libc has no ``mallopt``.

    Done with ctypes because no library exposes ``mallopt``; it only changes where large blocks live.
    """
    import ctypes

    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, nbytes))
    except (OSError, AttributeError):
        return False


def reset_cpu_peak() -> bool:
    """Reset the RSS high-water mark to the current RSS; False when the system does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def measure_peak(fn: Callable[[], object], device: str | torch.device = "cpu") -> float | None:
    """Run ``fn`` once and return its peak extra memory in MiB (None when it cannot be measured)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    pin_mmap_threshold()
    if not reset_cpu_peak():
        return None
    base = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    return None if base is None or peak is None else max(peak - base, 0) / 1024
