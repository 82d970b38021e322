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
from segkd.losses.discriminator import SAGANDiscriminator
from segkd.losses.functional.common import align_to_larger
from segkd.losses.functional.skd import (
    AdvLoss,
    PairPool,
    adversarial_d_loss,
    adversarial_g_loss,
    gradient_penalty,
    pairwise_affinity_loss,
)
from segkd.models.outputs import SegOutput


@LOSSES.register("skd_pairwise")
class SKDPairwise(DistillLoss):
    """Pair-wise affinity distillation on ``feat`` (see :func:`pairwise_affinity_loss`).

    Defaults: CIRKD's 2x2 max pooling (its table; config weight 10), pool-then-normalise with a detached
    norm (reference code). ``pool="skd"`` with ``scale=0.5`` is the official SKD setting (weight 0.5).
    ``block_size`` bounds memory: one (N, block_size, M) block of the affinity matrices at a time;
    ``method`` ("auto", "gram", "blocked"): row blocks or channel Gram matrices, "auto" picks the cheaper.

    Caution (measured on the demo): with the detached norm the gradient only rescales features and never
    rotates them apart, so a randomly initialised student at weight 10 collapsed to parallel features
    (loss stuck at 0.47, cross-entropy at the class prior, 9.5 mIoU); ``detach_norm: false`` (the paper's
    true gradient) trained normally (loss 0.02). The reference setting assumes ImageNet-initialised students.
    """

    def __init__(self, spec: DistillSpec, pool: PairPool = "cirkd", scale: float = 0.5,
                 detach_norm: bool = True, normalize_first: bool = False, block_size: int = 256,
                 method: AffinityMethod = "auto") -> None:
        super().__init__()
        if pool not in ("cirkd", "skd", "none"):
            raise ValueError(f"skd_pairwise: option 'pool' must be 'cirkd', 'skd' or 'none', got '{pool}'")
        if block_size < 1:
            raise ValueError(f"skd_pairwise: option 'block_size' must be >= 1, got {block_size}")
        self.pool, self.scale = pool, float(scale)
        self.detach_norm, self.normalize_first, self.block_size = detach_norm, normalize_first, block_size
        if method not in ("auto", "gram", "blocked"):
            raise ValueError(f"skd_pairwise: option 'method' must be 'auto', 'gram' or 'blocked', "
                             f"got '{method}'")
        self.method = method

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

    D sees ``softmax(logits)`` (N, K, h, w), optionally concatenated with the image bilinearly resized to
    (h, w) (``condition_on_image=True``, the paper's conditional GAN; the reference code feeds score maps
    only, hence the default False).

    - ``adv_loss="hinge"`` (default, CIRKD's variant that produced the CIRKD table): D minimises
      ``d_weight * (mean relu(1 - D(t)) + mean relu(1 + D(s)))``; Adam(4e-4, betas 0.9/0.99), no decay.
    - ``adv_loss="wgan-gp"`` (official SKD): D minimises
      ``d_weight * (mean D(s) - mean D(t) + gp_weight * GP)`` with the gradient penalty on per-sample
      interpolations; SGD 4e-4, momentum 0.9, wd 5e-4, poly 0.9.

    The student term (``forward``) is ``-mean D(s)`` for both; its weight (CIRKD 0.001, SKD 0.1) is in the
    config. D produces one score per sample (mean of its final map). ``gp_eps`` guards the penalty's
    square root (NaN D losses at small batch in the reference code).
    """

    def __init__(self, spec: DistillSpec, adv_loss: AdvLoss = "hinge", d_weight: float = 0.1,
                 gp_weight: float = 10.0, condition_on_image: bool = False, conv_dim: int = 64,
                 gp_eps: float = 1e-12) -> None:
        super().__init__()
        if adv_loss not in _OPTIM_DEFAULTS:
            raise ValueError(f"skd_holistic: option 'adv_loss' must be 'hinge' or 'wgan-gp', "
                             f"got '{adv_loss}'")
        self.adv_loss, self.d_weight, self.gp_weight = adv_loss, float(d_weight), float(gp_weight)
        self.condition_on_image, self.gp_eps = condition_on_image, float(gp_eps)
        in_ch = spec.num_classes + (spec.image_channels if condition_on_image else 0)
        self.discriminator = SAGANDiscriminator(in_ch, conv_dim)

    def _d_input(self, logits: Tensor, images: Tensor) -> Tensor:
        scores = F.softmax(logits, dim=1)
        if not self.condition_on_image:
            return scores
        img = F.interpolate(images.to(scores.dtype), size=scores.shape[-2:], mode="bilinear",
                            align_corners=False)
        return torch.cat([scores, img], dim=1)

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        return adversarial_g_loss(self.discriminator(self._d_input(student.logits, batch.images)))

    def adversary_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.discriminator.parameters())

    def adversary_optim_defaults(self) -> dict[str, Any]:
        """The discriminator's optimizer in the reference of the chosen ``adv_loss`` (see the class doc)."""
        return dict(_OPTIM_DEFAULTS[self.adv_loss])

    def _score_pair(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """D scores of both batches. Same-sized maps go through D in one pass: D has no batch statistics
        (spectral-norm convs, self-attention), so the scores equal two separate passes, at about half the
        cost; the spectral norm then runs one power iteration per D step instead of two."""
        if real.shape != fake.shape:
            return self.discriminator(real), self.discriminator(fake)
        scores = self.discriminator(torch.cat([real, fake]))
        return scores[: real.shape[0]], scores[real.shape[0]:]

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
