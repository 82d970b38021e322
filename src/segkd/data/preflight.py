"""Cheap data checks before the first training step, so a bad file cannot end a finished run.

``segkd data check`` (:mod:`segkd.data.check`) decodes every sample; that takes minutes on a large split.
:func:`preflight` instead

1. checks **every** image/label pair of a file-based dataset from its header only: the file exists and
   PIL recognises it, the label is single-channel, image and label sizes agree, and PNG / JPEG files end
   with their end marker (``IEND`` / ``FFD9``; a file without it is decoded fully to confirm it is
   truncated, so odd but valid files are not refused);
2. fully loads a **sample** of ``sample`` indices spread evenly over the split (first and last included)
   with the dataset's own reader, which also checks label values against ``[0, K)`` and ignore (255).

Problems from both splits are collected and raised together as one :class:`PreflightError` naming each
file; nothing is trained before it passes. Splits whose bad pairs the run skips when drawn
(``data.skip_bad``: ``tolerate``) only warn, one line per split.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from segkd.data.base import IGNORE_INDEX, DatasetError, FilePairDataset, SegDataset, read_image, read_label

TAIL_BYTES = 1024  # bytes read from the end of a file to find its end marker
END_MARKERS = {"PNG": b"IEND", "JPEG": b"\xff\xd9"}
MAX_LISTED = 20  # problems written out in the error message


class PreflightError(DatasetError):
    """One or more data files would fail during training or evaluation; the message names each file."""


@dataclass
class PreflightReport:
    """What :func:`preflight_split` checked in one split and what it found."""

    split: str
    header_checked: int = 0  # image/label pairs checked from headers
    decoded: int = 0  # samples fully loaded
    problems: list[str] = field(default_factory=list)


def preflight(datasets: Mapping[str, SegDataset | None], sample: int = 16,
              tolerate: Collection[str] = ()) -> list[PreflightReport]:
    """Check every split in ``datasets`` (``{"train": ..., "val": ...}``; None entries are skipped).

    Returns one :class:`PreflightReport` per split when all is well; raises :class:`PreflightError` listing
    every problem (``"<split>: <problem naming the file>"``) otherwise. The problems of the splits in
    ``tolerate`` are printed as a warning instead (their bad pairs are skipped when drawn).
    """
    from segkd.distributed import is_main_process

    reports = [preflight_split(ds, split, sample) for split, ds in datasets.items() if ds is not None]
    for r in reports:
        if r.split in tolerate and r.problems and is_main_process():
            print(f"warning: data.skip_bad: the data check found {len(r.problems)} problem(s) in {r.split}, "
                  f"skipped when drawn; first: {r.problems[0]}", file=sys.stderr)
    problems = [f"{r.split}: {p}" for r in reports if r.split not in tolerate for p in r.problems]
    if problems:
        listed = problems[:MAX_LISTED]
        more = [f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        raise PreflightError(
            f"data check before training found {len(problems)} problem(s); first: {problems[0]}\n"
            + "\n".join(f"  - {p}" for p in listed + more)
            + "\nfix or remove these files (`segkd data check CONFIG` scans everything); nothing was trained"
        )
    return reports


def preflight_split(dataset: SegDataset, split: str = "", sample: int = 16) -> PreflightReport:
    """Header checks on every file pair of ``dataset`` (if file based), full loads of ``sample`` indices."""
    report = PreflightReport(split)
    report.problems.extend(dataset.problems)
    bad_indices: set[int] = set()
    pairs = dataset.samples if isinstance(dataset, FilePairDataset) else []
    for index, pair in enumerate(pairs):
        found = _pair_problems(Path(pair.image), Path(pair.label))
        report.header_checked += 1
        if found:
            report.problems.extend(found)
            bad_indices.add(index)
    for index in sample_indices(len(dataset), sample):
        if index in bad_indices:
            continue
        try:
            _, label, name = dataset.load(index)
        except DatasetError as err:
            report.problems.append(str(err))
            continue
        report.decoded += 1
        bad = _label_values_outside(label, dataset.num_classes)
        if bad:
            report.problems.append(f"label of sample {name!r} has values {bad} outside [0, "
                                   f"{dataset.num_classes}) and not the ignore value {IGNORE_INDEX}")
    return report


def sample_indices(length: int, sample: int) -> list[int]:
    """Up to ``sample`` indices spread evenly over ``range(length)``, first and last included."""
    if length <= 0 or sample <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, length - 1, min(sample, length)).round()})


def _label_values_outside(label: np.ndarray, num_classes: int) -> list[int]:
    values = np.unique(label)
    return [int(v) for v in values if not (0 <= v < num_classes or v == IGNORE_INDEX)][:10]


def _pair_problems(image: Path, label: Path) -> list[str]:
    """Header-level problems of one image/label pair (empty when both look fine)."""
    problems = []
    image_info = _header(image, "image")
    label_info = _header(label, "label")
    for info in (image_info, label_info):
        if isinstance(info, str):
            problems.append(info)
    if problems:
        return problems
    (image_size, _), (label_size, label_mode) = image_info, label_info  # type: ignore[misc]
    if label_mode in ("RGB", "RGBA"):
        problems.append(f"label {label} is a colour ({label_mode}) image; expected a single-channel PNG")
    if image_size != label_size:
        problems.append(
            f"image {image} is {image_size[0]}x{image_size[1]} but its label {label} is "
            f"{label_size[0]}x{label_size[1]} (width x height)"
        )
    if not problems:
        problems += [p for p in (_truncation(image, "image"), _truncation(label, "label")) if p]
    return problems


def _header(path: Path, kind: str) -> tuple[tuple[int, int], str] | str:
    """``((width, height), mode)`` from the file header, or a problem naming the file."""
    if not path.is_file():
        return f"{kind} {path} does not exist"
    try:
        with Image.open(path) as img:
            return (int(img.size[0]), int(img.size[1])), str(img.mode)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"cannot read {kind} {path}: {err}"


def _truncation(path: Path, kind: str) -> str | None:
    """A problem if ``path`` (PNG/JPEG) lacks its end marker and does not decode; None otherwise."""
    with Image.open(path) as img:
        marker = END_MARKERS.get(img.format or "")
    if marker is None:
        return None
    with path.open("rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(handle.tell() - TAIL_BYTES, 0))
        if marker in handle.read():
            return None
    try:  # no end marker: decode to be sure (some writers append data after it)
        (read_image if kind == "image" else read_label)(path)
    except DatasetError as err:
        return str(err)
    return None
