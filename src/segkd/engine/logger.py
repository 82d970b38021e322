"""Training logs: a tqdm progress bar (ETA + current losses), ``log.jsonl`` and TensorBoard (rank 0 only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segkd.distributed import is_main_process
from segkd.rundir import RunDir


class RunLogger:
    """Writes one JSON object per logged iteration and the same scalars to TensorBoard."""

    def __init__(self, run_dir: Path, total_iters: int, start_iter: int, enabled: bool = True) -> None:
        self.enabled = enabled and is_main_process()
        self.bar = None
        self.writer = None
        if not self.enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(RunDir(run_dir).log, "a")  # noqa: SIM115 - closed in close()
        self.writer = SummaryWriter(str(RunDir(run_dir).tensorboard))
        self.bar = tqdm(
            total=total_iters, initial=start_iter, desc=run_dir.name, dynamic_ncols=True, mininterval=1.0
        )

    def step(self, postfix: dict[str, float]) -> None:
        """Advance the bar by one iteration, showing the current losses."""
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items()}, refresh=False)
            self.bar.update(1)

    def log(self, iteration: int, scalars: dict[str, float], prefix: str = "train") -> None:
        """Append ``{"iter": iteration, **scalars}`` to log.jsonl and each scalar to TensorBoard."""
        if not self.enabled:
            return
        record: dict[str, Any] = {
            "iter": iteration,
            **({} if prefix == "train" else {"split": prefix}),
            **scalars,
        }
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for key, value in scalars.items():
            self.writer.add_scalar(f"{prefix}/{key}", value, iteration)

    def event(self, iteration: int, name: str, data: dict[str, Any]) -> None:
        """Append ``{"iter": iteration, "event": name, **data}`` to log.jsonl (no TensorBoard scalar)."""
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"iter": iteration, "event": name, **data}) + "\n")
        self.jsonl.flush()

    def message(self, text: str) -> None:
        """Print a line without breaking the progress bar."""
        if not is_main_process():
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text)

    def close(self) -> None:
        if not self.enabled:
            return
        self.bar.close()
        self.writer.close()
        self.jsonl.close()
