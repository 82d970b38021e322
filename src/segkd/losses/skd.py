"""``skd_pairwise`` and ``skd_holistic``: the structured terms of SKD (Liu et al., CVPR 2019).

The pixel-wise SKD term is ``kd`` (option ``reduction="skd"`` for its original normalisation).

Alternation of the adversarial term (what the engine does each iteration)::

    d_opt.zero_grad(); out = loss.adversary_step(s_out, t_out, batch)   # student logits detached inside
    out["loss"].backward(); d_opt.step(); d_sched.step()
    total = ce + weight * loss(s_out, t_out, batch) + ...                # G term -D(s), grads reach student
    total.backward(); student_opt.step()

The G term also leaves gradients on D's parameters; ``zero_grad`` of the D optimizer before the next
adversary backward discards them, and the student optimizer never sees D (``student_parameters``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from segkd.losses.base import LOSSES, DistillBatch, DistillLoss, DistillSpec
from segkd.losses.blocked import AffinityMethod
from segkd.losses.discriminator import Preprocess, SAGANDiscriminator
from segkd.losses.functional.common import align_to_larger
from segkd.losses.functional.skd import (
    AdvLoss,
    PairPool,
    adversarial_d_loss,
    adversarial_g_loss,
    default_detach_norm,
    gradient_penalty,
    pairwise_affinity_loss,
)
from segkd.models.outputs import SegOutput


@LOSSES.register("skd_pairwise")
class SKDPairwise(DistillLoss):
    """Pair-wise affinity distillation on ``feat`` (see :func:`pairwise_affinity_loss`).

    Defaults: CIRKD's 2x2 max pooling (its table; config weight 10), pool-then-normalise. ``pool="skd"``
    with ``scale=0.5`` is the official SKD setting (weight 0.5). ``detach_norm`` (default None) follows
    the pool's reference: CIRKD's ``F.normalize`` lets the gradient through the norm (``pool="cirkd"``,
    ``"none"``); official SKD detaches it (``pool="skd"``). ``block_size`` bounds memory: one
    (N, block_size, M) block of the affinity matrices at a time; ``method`` ("auto", "gram", "blocked"):
    row blocks or channel Gram matrices, "auto" picks the cheaper.

    Caution (measured on the demo, before this default followed the pool): with the norm detached the
    gradient only rescales features and never rotates them apart, so a randomly initialised student at
    weight 10 collapsed to parallel features (loss stuck at 0.47, cross-entropy at the class prior,
    9.5 mIoU); with the gradient through the norm (CIRKD's code, now the ``pool="cirkd"`` default) it
    trained normally. Official SKD's detached norm assumes ImageNet-initialised students.
    """

    uses_labels = False  # never reads batch.labels: trains on unlabelled images too

    def __init__(self, spec: DistillSpec, pool: PairPool = "cirkd", scale: float = 0.5,
                 detach_norm: bool | None = None, normalize_first: bool = False, block_size: int = 256,
                 method: AffinityMethod = "auto") -> None:
        super().__init__()
        if pool not in ("cirkd", "skd", "none"):
            raise ValueError(f"skd_pairwise: option 'pool' must be 'cirkd', 'skd' or 'none', got '{pool}'")
        if block_size < 1:
            raise ValueError(f"skd_pairwise: option 'block_size' must be >= 1, got {block_size}")
        self.pool, self.scale = pool, float(scale)
        self.detach_norm = default_detach_norm(pool) if detach_norm is None else bool(detach_norm)
        self.normalize_first, self.block_size = normalize_first, block_size
        if method not in ("auto", "gram", "blocked"):
            raise ValueError(f"skd_pairwise: option 'method' must be 'auto', 'gram' or 'blocked', "
                             f"got '{method}'")
        self.method = method

    def teacher_reads(self) -> frozenset[str]:
        return frozenset({"feat"})

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        return pairwise_affinity_loss(student.feat, teacher.feat.detach(), self.pool, self.scale,
                                      self.detach_norm, self.normalize_first, self.block_size, self.method)


_OPTIM_DEFAULTS: dict[str, dict[str, Any]] = {
    # CIRKD variant: Adam, no weight decay, constant LR.
    "hinge": {"name": "adam", "lr": 4e-4, "betas": (0.9, 0.99), "weight_decay": 0.0, "momentum": 0.9,
              "poly_power": 0.0},
    # Official SKD: SGD with momentum, weight decay and poly decay.
    "wgan-gp": {"name": "sgd", "lr": 4e-4, "betas": (0.9, 0.99), "weight_decay": 5e-4, "momentum": 0.9,
                "poly_power": 0.9},
}


@LOSSES.register("skd_holistic")
class SKDHolistic(DistillLoss):
    """Holistic (adversarial) distillation: a SAGAN discriminator tells teacher from student score maps.

    D sees the **raw logits** (N, K, h, w) through its input BatchNorm2d (``preprocess="bn"``, both
    references' ``preprocess_GAN_mode=1``; ``"tanh"`` is their mode 2), optionally concatenated with the
    image bilinearly resized to (h, w) (``condition_on_image=True``, the paper's conditional GAN; the
    reference code feeds score maps only, hence the default False). D outputs a score map
    (N, 1, h', w'); every term acts per location of the map and then averages, as in both references.

    - ``adv_loss="hinge"`` (default, CIRKD's variant that produced the CIRKD table): D minimises
      ``d_weight * (mean relu(1 - D(t)) + mean relu(1 + D(s)))``; Adam(4e-4, betas 0.9/0.99), no decay.
    - ``adv_loss="wgan-gp"`` (official SKD): D minimises
      ``d_weight * (mean D(s) - mean D(t) + gp_weight * GP)``, GP on the gradient of the score-map sum at
      per-sample interpolations; SGD 4e-4, momentum 0.9, wd 5e-4, poly 0.9.

    The student term (``forward``) is ``-mean D(s)`` for both; its weight (CIRKD 0.001, SKD 0.1) is in the
    config. D runs once per batch, as in the references (its BatchNorm normalises the student and the
    teacher batches separately): D step in CIRKD's order D(s), D(t) (hinge) or SKD's D(t), D(s), GP
    (wgan-gp). ``gp_eps`` (default 0, the reference) adds eps under the penalty's square root.
    """

    uses_labels = False  # never reads batch.labels: trains on unlabelled images too

    def __init__(self, spec: DistillSpec, adv_loss: AdvLoss = "hinge", d_weight: float = 0.1,
                 gp_weight: float = 10.0, condition_on_image: bool = False, conv_dim: int = 64,
                 gp_eps: float = 0.0, preprocess: Preprocess = "bn") -> None:
        super().__init__()
        if adv_loss not in _OPTIM_DEFAULTS:
            raise ValueError(f"skd_holistic: option 'adv_loss' must be 'hinge' or 'wgan-gp', "
                             f"got '{adv_loss}'")
        self.adv_loss, self.d_weight, self.gp_weight = adv_loss, float(d_weight), float(gp_weight)
        self.condition_on_image, self.gp_eps = condition_on_image, float(gp_eps)
        in_ch = spec.num_classes + (spec.image_channels if condition_on_image else 0)
        self.discriminator = SAGANDiscriminator(in_ch, conv_dim, preprocess)

    def _d_input(self, logits: Tensor, images: Tensor) -> Tensor:
        if not self.condition_on_image:
            return logits
        img = F.interpolate(images.to(logits.dtype), size=logits.shape[-2:], mode="bilinear",
                            align_corners=False)
        return torch.cat([logits, img], dim=1)

    live_teacher_reason = ("its discriminator is trained against the live teacher's logits on the augmented "
                           "crop (adversarial term)")

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        return adversarial_g_loss(self.discriminator(self._d_input(student.logits, batch.images)))

    def adversary_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.discriminator.parameters())

    def adversary_optim_defaults(self) -> dict[str, Any]:
        """The discriminator's optimizer in the reference of the chosen ``adv_loss`` (see the class doc)."""
        return dict(_OPTIM_DEFAULTS[self.adv_loss])

    def _score_pair(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """D score maps of both batches, one pass each (batch statistics of D's input BatchNorm are per
        batch), in the reference's order: CIRKD (hinge) scores the student first, official SKD
        (wgan-gp) the teacher first; the order fixes the spectral-norm and BatchNorm state updates."""
        if self.adv_loss == "hinge":
            d_fake = self.discriminator(fake)
            return self.discriminator(real), d_fake
        d_real = self.discriminator(real)
        return d_real, self.discriminator(fake)

    def adversary_step(self, student: SegOutput, teacher: SegOutput,
                       batch: DistillBatch) -> dict[str, Tensor]:
        # Students whose logits differ in size from the teacher's (ESPNet: full resolution vs PSPNet's 1/8)
        # are compared at the larger size, as the ``kd`` term does; a no-op for same-sized logits.
        s_logits, t_logits = align_to_larger(student.logits.detach(), teacher.logits.detach())
        fake = self._d_input(s_logits, batch.images)
        real = self._d_input(t_logits, batch.images)
        d_real, d_fake = self._score_pair(real, fake)
        adv = adversarial_d_loss(d_real, d_fake, self.adv_loss)
        out = {"d_adv": adv.detach(), "d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}
        if self.adv_loss == "wgan-gp":
            gp = gradient_penalty(self.discriminator, real, fake, eps=self.gp_eps)
            out["d_gp"] = gp.detach()
            adv = adv + self.gp_weight * gp
        out["loss"] = self.d_weight * adv
        return out
