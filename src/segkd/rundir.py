"""A run directory: every path a training run writes, and the checks made before anything is written.

Layout::

    RUN_DIR/config.yaml            resolved config
    RUN_DIR/checkpoints/latest.pt  resumable state (previous.pt: the one before it, kept by every save)
    RUN_DIR/checkpoints/best.pt    best validation mIoU so far
    RUN_DIR/eval/                  evaluation written by training
    RUN_DIR/evals/<settings>/      each later ``segkd eval``, named by checkpoint, mode, scales and flip
    RUN_DIR/summary.json           what the run measured (for ``segkd report``)
    RUN_DIR/log.jsonl, RUN_DIR/tb  training log, TensorBoard
    RUN_DIR/autoencoder.pt         Knowledge Adaptation stage 1 output
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from segkd.checkpoint_io import PREVIOUS_NAME
from segkd.outputs import make_writable_dir, unused_path


class RunDirError(ValueError):
    """A run directory that training must not start in; the message names it and the ways out."""


@dataclass(frozen=True)
class RunDir:
    """Paths of one run (see the module docstring)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def latest(self) -> Path:
        return self.checkpoints / "latest.pt"

    @property
    def previous(self) -> Path:
        return self.checkpoints / PREVIOUS_NAME

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def autoencoder(self) -> Path:
        return self.root / "autoencoder.pt"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    def checkpoint(self, name: str) -> Path:
        """``checkpoints/<name>`` (``latest.pt``, ``best.pt``, ``previous.pt``)."""
        return self.checkpoints / name

    def trained_checkpoint(self) -> Path:
        """The weights to use from a finished run: ``best.pt``, else ``latest.pt``."""
        for path in (self.best, self.latest):
            if path.is_file():
                return path
        raise FileNotFoundError(f"{self.root}: no checkpoints/best.pt or checkpoints/latest.pt in this run")

    def evaluation(
        self, checkpoint: str | os.PathLike[str], mode: str, scales: list[float], flip: bool,
        split: str | None = None,
    ) -> Path:
        """A new folder for one ``segkd eval`` of ``checkpoint``, named by its settings (``split`` when it is
        not the validation split); a folder that already exists (an earlier evaluation) is never reused:
        ``-2``, ``-3`` ... are appended."""
        name = f"{Path(checkpoint).stem}_{split + '_' if split else ''}{mode}"
        if mode == "multiscale":
            name += "_" + "-".join(f"{s:g}" for s in scales)
        if flip:
            name += "_flip"
        return unused_path(self.root / "evals" / name, folder=True)

    def results(self) -> list[Path]:
        """Files that show a run already trained here (checkpoints, summary, KA auto-encoder)."""
        found = sorted(self.checkpoints.glob("*.pt")) if self.checkpoints.is_dir() else []
        return found + [p for p in (self.summary, self.autoencoder) if p.is_file()]

    def check_can_start(self, resume: str | None) -> None:
        """Refuse to train a fresh run over an earlier one (only ``train.resume`` may continue it)."""
        if resume not in (None, "", "none"):
            return
        found = self.results()
        if found:
            raise RunDirError(
                f"{self.root} already holds a run ({found[0].relative_to(self.root)}); segkd never "
                "overwrites one: continue it with train.resume=auto, or train into a new output_dir=..."
            )

    def create(self) -> None:
        """Create the folders and prove they are writable before any work starts."""
        for folder in (self.root, self.checkpoints):
            make_writable_dir(folder, "the run directory", "choose a writable output_dir=...")
