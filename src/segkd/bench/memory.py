"""Peak memory of one piece of work: CUDA ``max_memory_allocated``, or the peak RSS growth on CPU.

CPU method (documented in docs/BENCHMARKS.md): PyTorch keeps no statistics for its CPU allocator, and
``tracemalloc`` does not see tensor memory, so we use the kernel's resident-set high-water mark. Writing
``5`` to ``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS (Linux >= 4.0); the peak of the
work is then ``VmHWM`` after it minus ``VmRSS`` before it. That counts every byte the process touched
(tensors, autograd buffers, allocator slack), so it is an honest upper bound of the tensor peak.

To keep successive measurements in one process independent, :func:`measure_peak` first hands free heap
pages back to the kernel (``malloc_trim``; otherwise the work could reuse memory that is already resident
and its peak would be undercounted) and pins glibc's mmap threshold at 64 KiB, so that every larger buffer
is ``mmap``-ed and returned to the kernel when freed.

That pin makes every fresh buffer cost page faults, so benchmarks take all memory measurements first and
then call :func:`settle_allocator` before timing: it puts the thresholds where glibc's own dynamic
adjustment ends up in a long-running training process (mmap threshold 32 MiB, its cap on 64-bit; trim
threshold twice that). A one-off check on the 2-core VM (the demo-size steps of ``segkd bench distill``
timed by hand with the pin set, then settled; no command in the repo) gave 45 vs 16 ms for the
student + teacher step and 91 vs 34 ms for the CIRKD step.
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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameter ids
_GLIBC_MMAP_THRESHOLD_MAX = 32 * 2**20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc


def _libc_call(name: str, *args: int) -> bool:
    """Call glibc's ``mallopt`` / ``malloc_trim``; False where libc lacks it (non-glibc systems). Done with
    ctypes because no library exposes them; they only change where large blocks live and when freed heap
    memory goes back to the kernel."""
    import ctypes

    try:
        getattr(ctypes.CDLL(None), name)(*args)
    except (OSError, AttributeError):
        return False
    return True


def release_free_heap() -> bool:
    """glibc ``malloc_trim(0)``: hand every free heap page back to the kernel (False without it)."""
    return _libc_call("malloc_trim", 0)


def pin_mmap_threshold(nbytes: int = 64 * 1024) -> bool:
    """Fix glibc's (otherwise self-raising) mmap threshold at ``nbytes``; False without ``mallopt``."""
    return _libc_call("mallopt", _M_MMAP_THRESHOLD, nbytes)


def settle_allocator() -> bool:
    """Set the thresholds glibc's dynamic adjustment reaches in a long run (mmap 32 MiB, trim 64 MiB)."""
    return _libc_call("mallopt", _M_MMAP_THRESHOLD, _GLIBC_MMAP_THRESHOLD_MAX) and \
        _libc_call("mallopt", _M_TRIM_THRESHOLD, 2 * _GLIBC_MMAP_THRESHOLD_MAX)


def reset_cpu_peak() -> bool:
    """Reset the RSS high-water mark to the current RSS; False when the system does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def measure_peak(fn: Callable[[], object], device: str | torch.device = "cpu") -> float | None:
    """Run ``fn`` once and return its peak extra memory in MiB (None when it cannot be measured).

    On CPU this leaves the 64 KiB mmap pin in place: call :func:`settle_allocator` before timing anything.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    release_free_heap()
    pin_mmap_threshold()
    if not reset_cpu_peak():
        return None
    base = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    return None if base is None or peak is None else max(peak - base, 0) / 1024
