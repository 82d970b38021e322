"""Pure functions of Knowledge Adaptation (He et al., "Knowledge Adaptation for Efficient Semantic
Segmentation", CVPR 2019).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from segkd.losses.functional.common import check_same_shape

__all__ = ["ka_adaptation_loss", "ka_affinity_loss", "ka_affinity_loss_torchdistill", "autoencoder_loss"]


def ka_adaptation_loss(latent_t: Tensor, adapted_s: Tensor, reduction: str = "mean") -> Tensor:
    """Feature adaptation loss (paper Eq. 3, q = 2, p = 1 as in torchdistill's ``KTALoss``).

    Each sample's whole map is flattened and L2-normalised, x_hat = x / ||x||_2 over C*H*W (torchdistill
    normalises per sample over the whole map, not per position), then torchdistill's
    ``l1_loss(x_hat_s, x_hat_t, reduction)``::

        "mean" (default, torchdistill's KTAAD config):  L = 1/(N*C*H*W) sum_n || x_hat^t_n - x_hat^s_n ||_1
        "sum":                                          L =             sum_n || x_hat^t_n - x_hat^s_n ||_1

    Shapes: ``latent_t`` = E(teacher feat) and ``adapted_s`` = C_f(student feat), both (N, C, H, W).
    """
    check_same_shape(adapted_s, latent_t, "ka_adapt")
    t = F.normalize(latent_t.flatten(1), p=2, dim=1)
    s = F.normalize(adapted_s.flatten(1), p=2, dim=1)
    if reduction not in ("sum", "mean"):
        raise ValueError(f"ka_adapt: reduction must be 'sum' or 'mean', got {reduction!r}")
    return F.l1_loss(s, t, reduction=reduction)


def ka_affinity_loss(latent_t: Tensor, adapted_s: Tensor) -> Tensor:
    """Affinity distillation loss (paper Eq. 5): cosine affinity over all position pairs.

    With f_i the feature vector at position i L2-normalised over channels, A_ij = <f_i, f_j> (HW x HW per
    sample); L = 1/(N (HW)^2) sum_n ||A^s_n - A^t_n||_F^2 (mean squared difference of the affinities).

    The HW x HW matrices are never formed: for A = F F^T (F: HW x C),
    ||A_s - A_t||_F^2 = ||F_s^T F_s||_F^2 + ||F_t^T F_t||_F^2 - 2 ||F_s^T F_t||_F^2, which needs only
    C x C Gram matrices (exact identity; memory O(HW C + C^2)). Shapes: (N, Ct', H, W) and (N, Cs', H, W);
    channel counts may differ, spatial sizes must match.
    """
    if latent_t.shape[0] != adapted_s.shape[0] or latent_t.shape[-2:] != adapted_s.shape[-2:]:
        raise ValueError(
            f"ka_affinity: shapes {tuple(latent_t.shape)} and {tuple(adapted_s.shape)} must agree "
            "in batch and spatial size"
        )
    ft = F.normalize(latent_t.flatten(2), p=2, dim=1)  # (N, C, HW)
    fs = F.normalize(adapted_s.flatten(2), p=2, dim=1)
    ss = (fs @ fs.transpose(1, 2)).pow(2).sum(dim=(1, 2))
    tt = (ft @ ft.transpose(1, 2)).pow(2).sum(dim=(1, 2))
    st = (fs @ ft.transpose(1, 2)).pow(2).sum(dim=(1, 2))
    hw = ft.shape[2]
    return ((ss + tt - 2 * st) / hw**2).mean()


def ka_affinity_loss_torchdistill(latent_t: Tensor, adapted_s: Tensor, reduction: str = "mean") -> Tensor:
    """Affinity loss as torchdistill's ``AffinityLoss`` (``definition: torchdistill`` of ``ka_affinity``).

    Each *channel* c is a vector over the HW positions, L2-normalised over positions (x_c = x_c / ||x_c||),
    its affinity the (HW x HW) outer product x_c x_c^T; per sample the **un-squared** Frobenius norms of
    the scaled differences are summed over channels::

        l_n = sum_c || (s_c s_c^T - t_c t_c^T) / HW ||_F,     L = mean_n l_n  ("mean") or sum_n l_n ("sum")

    Computed without the HW x HW matrices: for unit vectors s, t,
    ||s s^T - t t^T||_F^2 = 2 (1 - (s.t)^2) = ||s - t||^2 ||s + t||^2 / 2, so each channel contributes
    ``||s_c - t_c|| * ||s_c + t_c|| / (sqrt(2) * HW)`` (no cancellation when s ~ t; the norm's gradient
    at s = t is 0, as ``torch.linalg.vector_norm`` defines it). Normalisation uses ``F.normalize``
    (torchdistill divides by the bare norm: NaN for an all-zero channel, finite here). Shapes: both
    (N, C, H, W) with the same C (channel c of the student adapter is compared with channel c of E(t)).
    """
    check_same_shape(adapted_s, latent_t, "ka_affinity (torchdistill)")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"ka_affinity: reduction must be 'sum' or 'mean', got {reduction!r}")
    t = F.normalize(latent_t.flatten(2), p=2, dim=2)  # (N, C, HW), unit over positions
    s = F.normalize(adapted_s.flatten(2), p=2, dim=2)
    hw = t.shape[2]
    per_channel = (s - t).norm(dim=2) * (s + t).norm(dim=2) / (2**0.5 * hw)  # (N, C)
    per_sample = per_channel.sum(dim=1)
    return per_sample.mean() if reduction == "mean" else per_sample.sum()


def autoencoder_loss(recon: Tensor, target: Tensor, latent: Tensor, l1_weight: float = 1e-7) -> Tensor:
    """Stage-1 objective: mean squared reconstruction error + alpha * per-sample L1 norm of the latent.

    L = mean((recon - target)^2) + alpha / N * sum |latent|; shapes (N, C, H, W) and (N, L, h, w).
    """
    check_same_shape(recon, target, "ka autoencoder")
    return F.mse_loss(recon, target) + l1_weight * latent.abs().sum() / latent.shape[0]
