"""Where the time of CIRKD's mini-batch pixel-to-pixel term goes, against the naive all-pairs reference.

Usage: ``python scripts/cirkd_p2p_floor.py [BxHxW] [rounds]`` (default 2x64x128, 3 rounds; 128 student /
256 teacher channels, tau 0.1). Times, interleaved per round (the machine may be shared):

- ``products``: the four matrix products any exact method needs per step (student and teacher similarity
  logits, and the two gradient products), block by block as the fused loss runs them, nothing else;
- ``fused``: the registered loss's forward + backward
  (:func:`segkd.losses.functional.cirkd.cross_image_pixel_kd`);
- ``naive``: the reference-shaped computation of :mod:`segkd.bench.naive` (same products, all pair matrices
  at once), forward + backward.

``fused - products`` is the element-wise work (softmaxes, KL, difference) the fused loss adds; the naive
reference performs the same products, so ``naive / fused`` cannot exceed ``naive / products``.
"""

import statistics
import sys
import time

import torch

from segkd.bench.memory import settle_allocator
from segkd.bench.naive import cirkd_batch_p2p_naive
from segkd.losses.functional.cirkd import _as_pixels, cross_image_pixel_kd
from segkd.losses.functional.relation_kl import block_rows

settle_allocator()
b, h, w = (int(v) for v in (sys.argv[1] if len(sys.argv) > 1 else "2x64x128").split("x"))
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
g = torch.Generator().manual_seed(0)
fs = torch.randn(b, 128, h, w, generator=g).requires_grad_()
ft = torch.randn(b, 256, h, w, generator=g)


def products() -> None:
    s, t = _as_pixels(fs.detach()).flatten(0, 1), _as_pixels(ft).flatten(0, 1)
    grad_rows, grad_cols = torch.empty_like(s), torch.zeros_like(s)
    block = block_rows(s.shape[0])
    for start in range(0, s.shape[0], block):
        sl = slice(start, start + block)
        z_s = (s[sl] * 10.0) @ s.T
        (t[sl] * 10.0) @ t.T
        grad_rows[sl] = z_s @ s
        grad_cols.addmm_(z_s.T, s[sl])


def run(loss_fn):
    def step() -> None:
        fs.grad = None
        loss_fn(fs, ft).backward()
    return step


cases = {"products": products, "fused": run(cross_image_pixel_kd), "naive": run(cirkd_batch_p2p_naive)}
times: dict[str, list[float]] = {k: [] for k in cases}
for _ in range(rounds):
    for name, fn in cases.items():
        t0 = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - t0)
print(f"{b}x{h}x{w}, {rounds} interleaved rounds, {torch.get_num_threads()} threads")
print("| case | median s | min s | max s |\n|---|---|---|---|")
for name, ts in times.items():
    print(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} | {max(ts):.2f} |")
ratios = [n / f for n, f in zip(times["naive"], times["fused"], strict=True)]
bound = [n / p for n, p in zip(times["naive"], times["products"], strict=True)]
print(f"naive/fused per round: {[round(r, 2) for r in ratios]}")
print(f"naive/products per round: {[round(r, 2) for r in bound]}")
