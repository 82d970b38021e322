"""Fixed thresholds for glibc's ``malloc``, so that what a training iteration costs on the CPU does not
depend on what the process allocated before.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a request above its *mmap
threshold* with a fresh ``mmap`` (returned to the system when freed) and gives heap memory above its *trim
threshold* back to the system; both thresholds move on their own (the mmap threshold rises to the size of
the largest mmapped block freed so far, up to 32 MiB). Every mmapped or trimmed block that is used again
is zero-filled page by page by the kernel on first touch (minor page faults). So the cost of the same
iteration depends on the process's allocation history. Measured with the demo's student (96x96, batch 8,
2-core x86-64; ``resource.getrusage`` minor faults per iteration, a count the machine's load does not
move): a baseline iteration took 4057 page faults alone in its process and 3549 alternated with
distilled runs, a KD iteration 1372 / 1279, a DIST iteration 807 / 1204; with the thresholds fixed,
0 to 8 for all of them, and the baseline iteration 18 ms instead of 26 ms. Since the faults fell mostly on
the baseline (a distilled run's teacher frees larger blocks first, which raises the threshold), the step
ratio that :mod:`segkd.engine.step_cost` measured with two trainers alternating (kd 1.02-1.05, dist
1.08-1.11) was far below what the runs then paid alone (kd 1.25, dist 1.32: issue 26).

:func:`fix_malloc_thresholds` sets both thresholds once per process (``mallopt``; setting them also turns
glibc's automatic adjustment off): blocks up to 32 MiB (glibc's largest allowed mmap threshold) come from
the heap, and freed heap memory is kept for reuse, so the resident size stays near the peak working set
instead of shrinking between iterations. Written by hand with ``ctypes``: PyTorch has no caching CPU
allocator to switch on, and jemalloc / tcmalloc (what PyTorch's CPU tuning guide recommends, through
``LD_PRELOAD``) cannot be loaded from inside a running process. Left alone: non-glibc platforms, and
a process whose user already chose (``MALLOC_*_`` variables, ``GLIBC_TUNABLES``, or ``LD_PRELOAD`` of
another allocator), or that sets ``SEGKD_MALLOC=default``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB free at the heap top is "never" here

_USER_SETTINGS = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
    "GLIBC_TUNABLES",
)
_state: dict[str, bool] = {}


def user_chose_allocator(env: dict[str, str] | None = None) -> bool:
    """True when the environment already sets glibc's malloc up, preloads another allocator, or asks
    segkd to leave malloc alone (``SEGKD_MALLOC=default``)."""
    env = dict(os.environ) if env is None else env
    if env.get("SEGKD_MALLOC", "").lower() == "default":
        return True
    return any(key in env for key in _USER_SETTINGS) or "malloc" in env.get("LD_PRELOAD", "")


def fix_malloc_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (see the module docstring); idempotent.

    Returns True when they are fixed (now or by an earlier call), False where nothing was changed
    (not Linux with glibc, or the user's own allocator settings, :func:`user_chose_allocator`)."""
    if "fixed" not in _state:
        _state["fixed"] = _apply()
    return _state["fixed"]


def _apply() -> bool:
    if not sys.platform.startswith("linux") or user_chose_allocator():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
