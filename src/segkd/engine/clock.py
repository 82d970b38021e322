"""How segkd times a training iteration: the host's wall clock on a CPU, CUDA events on a GPU.

Budgets (:mod:`segkd.engine.budget`), the step-cost measurement of time-matched comparisons
(:mod:`segkd.engine.step_cost`) and the benchmarks all time iterations with :class:`StepClock`. On CUDA it
records an event on the current stream when the step starts and another when it ends, waits for the second
and reads the time between them (``Event.elapsed_time``): the device's own clock, which spans everything
the step queued, with no host-side synchronisation inside the step and none of the host's scheduling noise
in the reading. On the CPU it reads ``time.perf_counter`` (everything ran by the time the step returned).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: str | torch.device) -> None:
    """Wait for queued CUDA work, so that a timer measures it (nothing on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Times one step at a time: ``start()``, then ``stop()`` returns its seconds.

    ``elapsed()`` reads the host clock since ``start()`` while the step runs (what a time budget's
    progress uses mid-step); ``stop()`` gives the step's seconds, on CUDA from the events.
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or "cpu")
        self.cuda = self.device.type == "cuda"
        self._host: float | None = None
        self._event: torch.cuda.Event | None = None

    @property
    def running(self) -> bool:
        return self._host is not None

    def start(self) -> None:
        self._host = time.perf_counter()
        if self.cuda:
            self._event = torch.cuda.Event(enable_timing=True)
            self._event.record(torch.cuda.current_stream(self.device))

    def elapsed(self) -> float:
        """Host seconds since :meth:`start` (0 when not running)."""
        return 0.0 if self._host is None else time.perf_counter() - self._host

    def stop(self) -> float:
        """Seconds since :meth:`start`: CUDA event time on a GPU (after waiting for the step's work),
        the host clock on a CPU; 0 when not running."""
        if self._host is None:
            return 0.0
        seconds = time.perf_counter() - self._host
        if self._event is not None:
            end = torch.cuda.Event(enable_timing=True)
            end.record(torch.cuda.current_stream(self.device))
            end.synchronize()
            seconds = self._event.elapsed_time(end) / 1000.0
        self._host, self._event = None, None
        return seconds

    def time(self, fn: Callable[[], object]) -> float:
        """Seconds of one call of ``fn`` (started and stopped around it)."""
        self.start()
        fn()
        return self.stop()
