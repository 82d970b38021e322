"""Stopping a training run cleanly on Ctrl-C (SIGINT) or SIGTERM (how cluster schedulers pre-empt jobs).

The first signal only sets a flag: the trainer finishes the iteration it is in (so the saved state is
consistent), saves a resumable ``latest.pt``, prints how to resume and raises :class:`TrainingInterrupted`;
the CLI exits with ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM), the shell convention. A
second signal aborts at once with the usual KeyboardInterrupt. Under torchrun the ranks agree on stopping
(a max all-reduce of the flag each iteration), so every rank stops after the same iteration.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import torch

from segkd.distributed import all_reduce, is_dist_initialized, is_main_process

HANDLED = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal after saving a resumable checkpoint."""

    def __init__(self, signum: int, iteration: int, checkpoint: str) -> None:
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} at iteration {iteration}; saved {checkpoint}; "
            "continue with the same command and train.resume=auto"
        )
        self.signum = signum
        self.exit_code = 128 + signum


class GracefulStop:
    """Context manager that turns SIGINT/SIGTERM into a stop request checked between iterations."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # handlers only in the main thread
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:  # second signal: abort now
            self.__exit__()
            raise KeyboardInterrupt(
                f"aborted by a second {signal.Signals(signum).name} without saving this iteration; the last "
                "checkpoint saved is intact (continue with train.resume=auto)"
            )
        self.signum = signum
        if is_main_process():
            print(
                f"\nsegkd train: {signal.Signals(signum).name} received; finishing this iteration and "
                "saving a checkpoint (press Ctrl-C again to abort without saving)",
                flush=True,
            )

    def requested(self, device: torch.device | str = "cpu") -> int:
        """The signal number to stop on (0: keep going), agreed across ranks under torchrun
        (``device``: where the collective runs, the CUDA device under NCCL)."""
        if not is_dist_initialized():
            return self.signum
        flag = torch.tensor([float(self.signum)], device=device)
        return int(all_reduce(flag, "max").item())
