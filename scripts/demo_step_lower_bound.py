"""Lower bounds of the SKD and CIRKD steps at the demo's sizes: work no exact implementation can skip.

Usage: ``python scripts/demo_step_lower_bound.py``. Prints the median time of (a) the similarity-matrix
products and log-softmaxes of CIRKD's two pixel terms (mini-batch p2p and memory p2p; forward and
backward products) and (b) the discriminator passes of SKD's adversarial term (one to the student's
score maps for the generator term; D's own update: one pass per batch, real and fake). Compare them with the
allowance of the 1.25x target: 0.25 x the ``student+teacher`` row of ``segkd bench distill
configs/bench/demo_sizes.yaml`` (docs/BENCHMARKS.md).
"""

import statistics
import time

import torch

from segkd.bench.memory import settle_allocator
from segkd.losses.discriminator import SAGANDiscriminator

settle_allocator()


def median_ms(fn, n=50):
    for _ in range(5):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


# CIRKD: 8 images x 12x12 feat pixels = 1152 anchors; student 32 / teacher 48 channels; 1026 memory pixels.
r, q = 1152, 1026
s, t, s2, t2 = torch.randn(r, 32), torch.randn(r, 48), torch.randn(r, 48), torch.randn(q, 48)
g1, g2 = torch.randn(r, r), torch.randn(r, q)


def cirkd_products():  # batch p2p: 2 forward + 2 backward; memory p2p: 2 forward + 1 backward
    for a, b in ((s, s.T), (t, t.T), (g1, s), (g1.T, s), (s2, t2.T), (s2, t2.T), (g2, t2)):
        a @ b


def cirkd_softmaxes():  # one log-softmax per similarity matrix, student and teacher, both terms
    for z in (g1.view(r, 8, 144), g1.view(r, 8, 144), g2, g2):
        torch.log_softmax(z, -1)


print(f"CIRKD similarity matrix products: {median_ms(cirkd_products):.2f} ms")
print(f"CIRKD log-softmaxes of those matrices: {median_ms(cirkd_softmaxes):.2f} ms")

# SKD: SAGAN discriminator (conv_dim 16, 9 classes) on 12x12 score maps.
d = SAGANDiscriminator(9, 16)
x8 = torch.rand(8, 9, 12, 12, requires_grad=True)
real, fake = torch.rand(8, 9, 12, 12), torch.rand(8, 9, 12, 12)
d_student = median_ms(lambda: d(x8).mean().backward())
# D's update: one pass per batch (its input BatchNorm uses each batch's statistics, as the references)
d_update = median_ms(lambda: (d(real).mean() + d(fake).mean()).backward())
print(f"SKD D forward+backward to the student maps (batch 8): {d_student:.2f} ms")
print(f"SKD D forward+backward to D's weights (two passes of batch 8): {d_update:.2f} ms")
