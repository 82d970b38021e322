"""Prediction on image files: label PNGs (palette mode) and colour overlays.

Each image is normalised with the model's stored mean/std, run at its own size (or resized to the fixed
input size of a static exported graph), and the logits are upsampled back to the original size before
the argmax, so every label PNG has the image's exact size.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segkd.config_schema import InputConfig
from segkd.export.runners import LoadedModel
from segkd.input_convention import to_input
from segkd.outputs import write_rendered

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class ImageInput:
    """An image to segment and its relative output name (``.png``) under OUT/labels and OUT/overlays."""

    path: Path
    name: Path


def collect_images(inputs: Iterable[str | Path]) -> list[ImageInput]:
    """Image files named directly or found (recursively, sorted) in the given folders.

    A file found in a folder keeps its path relative to that folder (``a/x.png`` and ``b/x.png`` stay
    apart); a file named directly keeps its file name. Two inputs that would write the same output (``x.png``
    and ``x.jpg``, or two folders holding ``x.png``) raise ``ValueError`` naming both, before anything runs.
    """
    inputs = list(inputs)
    found: list[ImageInput] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            found += [ImageInput(p, p.relative_to(item).with_suffix(".png")) for p in files]
        elif item.is_file():
            found.append(ImageInput(item, Path(item.name).with_suffix(".png")))
        else:
            raise FileNotFoundError(f"image or folder not found: {item}")
    if not found:
        raise FileNotFoundError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {inputs}")
    _refuse_clashes(found)
    return found


def _refuse_clashes(found: list[ImageInput]) -> None:
    first: dict[Path, Path] = {}
    for item in found:
        if item.name in first and first[item.name] != item.path:
            raise ValueError(
                f"{first[item.name]} and {item.path} would both be written as labels/{item.name.as_posix()}; "
                "predict them in separate runs (different --out) or pass their common parent folder"
            )
        first.setdefault(item.name, item.path)


class UnreadableImage(ValueError):
    """An input file that is not a decodable image (corrupt, truncated or another format)."""


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file fully as (H, W, 3) uint8 RGB; :class:`UnreadableImage` names the file."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:  # PIL's decode errors
        raise UnreadableImage(f"{path}: not a readable image ({type(err).__name__}: {err})") from err


def normalise(image: np.ndarray, convention: InputConfig) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 in the model's input ``convention``, as the data pipeline
    prepares evaluation images."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
    return to_input(x, convention)[None].numpy().copy()


def predict_labels(model: LoadedModel, image: np.ndarray) -> np.ndarray:
    """Label map (H, W) uint8/int of one RGB image."""
    h, w = image.shape[:2]
    x = normalise(image, model.meta.convention)
    if model.fixed_size and model.fixed_size != (h, w):
        x = F.interpolate(torch.from_numpy(x), size=model.fixed_size, mode="bilinear",
                          align_corners=False).numpy()
    logits = torch.from_numpy(model.run(x))
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].numpy()


def label_png(labels: np.ndarray, palette: np.ndarray) -> Image.Image:
    """Palette ("P" mode) PNG whose pixel values are the class ids."""
    if labels.max(initial=0) > 255:
        raise ValueError("more than 256 classes cannot be written as a palette PNG")
    png = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = np.zeros((256, 3), np.uint8)
    flat[: len(palette)] = palette[:256]
    png.putpalette(flat.reshape(-1).tolist())
    return png


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image blended with its colour-coded labels."""
    colours = palette[np.clip(labels, 0, len(palette) - 1)]
    return Image.fromarray((image * (1 - alpha) + colours * alpha).round().astype(np.uint8))


@dataclass
class PredictResult:
    """What :func:`predict_files` wrote and which inputs it skipped (``(path, reason)``)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def predict_files(model: LoadedModel, images: list[ImageInput], out_dir: str | Path, progress: bool = True,
                  alpha: float = 0.5) -> PredictResult:
    """Write ``OUT/labels/<name>`` and ``OUT/overlays/<name>`` per image (names from :func:`collect_images`).

    A file that cannot be decoded is skipped with a warning on stderr and listed in ``skipped``; the others
    are still written, each atomically (:mod:`segkd.outputs`). ``out_dir`` is used as given: the command
    chooses a folder that holds no earlier output.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    palette = model.meta.palette_array
    result = PredictResult()
    for item in tqdm(images, desc="predict", unit="img", disable=not progress):
        try:
            image = read_rgb(item.path)
        except UnreadableImage as err:
            print(f"segkd predict: warning: skipping {err}", file=sys.stderr)
            result.skipped.append((item.path, str(err)))
            continue
        labels = predict_labels(model, image)
        target = out_dir / "labels" / item.name
        overlay_path = out_dir / "overlays" / item.name
        write_rendered(target, partial(label_png(labels, palette).save, format="PNG"))
        write_rendered(overlay_path, partial(overlay(image, labels, palette, alpha).save, format="PNG"))
        result.written.append(target)
    return result
