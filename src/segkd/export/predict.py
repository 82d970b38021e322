"""Prediction on image files: label PNGs (palette mode) and colour overlays.

Each image is normalised with the model's stored mean/std, run at its own size (or resized to the fixed
input size of a static exported graph), and the logits are upsampled back to the original size before
the argmax, so every label PNG has the image's exact size.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segkd.export.runners import LoadedModel

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in the given folders."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            found.append(item)
        else:
            raise FileNotFoundError(f"image or folder not found: {item}")
    if not found:
        raise FileNotFoundError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {list(inputs)}")
    return found


def normalise(image: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 ``(x/255 - mean) / std``."""
    x = (image.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return x.transpose(2, 0, 1)[None].copy()


def predict_labels(model: LoadedModel, image: np.ndarray) -> np.ndarray:
    """Label map (H, W) uint8/int of one RGB image."""
    h, w = image.shape[:2]
    x = normalise(image, model.meta.mean, model.meta.std)
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


def predict_files(model: LoadedModel, images: list[Path], out_dir: str | Path, progress: bool = True,
                  alpha: float = 0.5) -> list[Path]:
    """Write ``OUT/labels/<stem>.png`` and ``OUT/overlays/<stem>.png`` per image; returns the label paths."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    palette = model.meta.palette_array
    written = []
    for path in tqdm(images, desc="predict", unit="img", disable=not progress):
        image = np.asarray(Image.open(path).convert("RGB"))
        labels = predict_labels(model, image)
        target = out_dir / "labels" / f"{path.stem}.png"
        label_png(labels, palette).save(target)
        overlay(image, labels, palette, alpha).save(out_dir / "overlays" / f"{path.stem}.png")
        written.append(target)
    return written
