"""Helpers for listing native dataset layouts: required folders, image/label pairing, layout errors.

Every error names the path it concerns and, for a missing folder, shows the layout segkd expects, so a
user never has to guess (or run a conversion script) to make a dataset load.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from segkd.data.base import DatasetError, Sample

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MAX_LISTED_PROBLEMS = 10


def require_dir(path: Path, dataset: str, layout: str) -> Path:
    """Return ``path`` if it is a folder, else raise FileNotFoundError naming it and the expected layout."""
    if not path.is_dir():
        raise FileNotFoundError(f"{dataset}: folder not found: {path}\nExpected layout:\n{layout}")
    return path


def require_root(root: str | Path | None, dataset: str, layout: str) -> Path:
    """The dataset root as a Path; missing or unset roots raise FileNotFoundError with the expected layout."""
    if root is None or str(root) == "":
        raise FileNotFoundError(f"{dataset}: no dataset root given (data.root). Expected layout:\n{layout}")
    return require_dir(Path(root).expanduser(), dataset, layout)


def files_by_key(folder: Path, suffixes: Iterable[str], recursive: bool = False) -> dict[str, Path]:
    """Map key -> file for files in ``folder`` ending with one of ``suffixes`` (case-insensitive).

    The key is the path relative to ``folder`` with the matched suffix removed, so an image
    ``aachen/x_leftImg8bit.png`` and a label ``aachen/x_gtFine_labelIds.png`` both key as ``aachen/x``.
    """
    suffixes = tuple(s.lower() for s in suffixes)
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        lower = path.name.lower()
        match = next((s for s in suffixes if lower.endswith(s)), None)
        if match is None or not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        found[rel[: len(rel) - len(match)]] = path
    return found


def pair_files(
    images: dict[str, Path], labels: dict[str, Path], label_hint: str
) -> tuple[list[Sample], list[str]]:
    """Pair images and labels by key; return the pairs and one problem line per unpaired file."""
    samples, problems = [], []
    for key, image in images.items():
        if key in labels:
            samples.append(Sample(image, labels[key], key))
        else:
            problems.append(f"image without label: {image} (expected label {label_hint.format(key=key)})")
    problems += [f"label without image: {labels[key]}" for key in labels if key not in images]
    return samples, problems


def pairs_from_ids(
    ids: Iterable[str],
    image_dir: Path,
    label_dir: Path,
    image_suffix: str = ".jpg",
    label_suffix: str = ".png",
) -> tuple[list[Sample], list[str]]:
    """``(samples, problems)`` for image ids listed in a split file (VOC-style layouts): each id needs
    ``image_dir/<id><image_suffix>`` and ``label_dir/<id><label_suffix>``; a missing file is a problem."""
    samples, problems = [], []
    for image_id in ids:
        image, label = image_dir / f"{image_id}{image_suffix}", label_dir / f"{image_id}{label_suffix}"
        if not image.is_file():
            problems.append(f"listed image missing: {image}")
        elif not label.is_file():
            problems.append(f"image without label: {image} (expected label {label})")
        else:
            samples.append(Sample(image, label, image_id))
    return samples, problems


def finish_listing(samples: list[Sample], problems: list[str], strict: bool, where: Path) -> list[Sample]:
    """Raise on layout problems (strict) or an empty split; otherwise return the samples."""
    if problems and strict:
        shown = "\n  ".join(problems[:MAX_LISTED_PROBLEMS])
        more = len(problems) - MAX_LISTED_PROBLEMS
        extra = f"\n  ... and {more} more (run `segkd data check` to list all)" if more > 0 else ""
        raise DatasetError(f"{len(problems)} problem(s) in dataset at {where}:\n  {shown}{extra}")
    if not samples and not problems:
        raise DatasetError(f"no image/label pairs found under {where}")
    return samples
