"""Wall-clock timing helpers shared by the benchmarks (``time.perf_counter`` + device synchronisation)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from segkd.engine.clock import synchronize  # shared with the engine's step timers


def time_calls(fn: Callable[[], object], iters: int, warmup: int = 2, device: str = "cpu") -> list[float]:
    """Seconds per call of ``fn`` over ``iters`` timed calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def summarise(times: list[float], batch: int = 1) -> dict[str, float]:
    """Median and 90th-percentile latency (ms) and throughput (images/s at the median)."""
    arr = np.asarray(times, dtype=np.float64)
    median = float(np.median(arr))
    return {
        "median_ms": 1e3 * median,
        "p90_ms": 1e3 * float(np.percentile(arr, 90)),
        "throughput": batch / median if median > 0 else float("inf"),
        "iters": len(times),
    }
