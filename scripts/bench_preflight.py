"""Time the data pre-flight (headers of every pair + 16 decoded samples) against a full ``data check`` scan.

    PYTHONPATH=src python scripts/bench_preflight.py --pairs 500 --size 256x512

Generates a ``folder`` dataset of random images (PNG) and smooth label maps in a temporary directory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from segkd.data.check import scan
from segkd.data.folder import FolderDataset
from segkd.data.preflight import preflight_split


def make(root: Path, pairs: int, h: int, w: int) -> None:
    rng = np.random.default_rng(0)
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for i in range(pairs):
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / "val" / f"{i}.png")
        label = (np.arange(w)[None, :] * 19 // w + np.zeros((h, 1), int)).astype(np.uint8)
        Image.fromarray(label).save(root / "labels" / "val" / f"{i}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--size", default="256x512")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        make(Path(tmp), args.pairs, h, w)
        dataset = FolderDataset(tmp, "val", num_classes=19)
        start = time.perf_counter()
        report = preflight_split(dataset, "val", sample=16)
        pre = time.perf_counter() - start
        start = time.perf_counter()
        scan(dataset, "folder", "val", progress=False)
        full = time.perf_counter() - start
    print(f"{args.pairs} pairs of {h}x{w}: preflight {pre:.2f} s ({report.header_checked} pairs from "
          f"headers, {report.decoded} decoded, {len(report.problems)} problems); "
          f"full data check scan {full:.2f} s")


if __name__ == "__main__":
    main()
