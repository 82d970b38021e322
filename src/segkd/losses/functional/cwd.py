"""Channel-wise Distillation.

Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction" (ICCV 2021).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from segkd.losses.functional.common import check_rank, check_same_shape


def channel_wise_loss(student: Tensor, teacher: Tensor, temperature: float = 4.0,
                      channels: int | None = None) -> Tensor:
    """CWD: per channel, a distribution over the H*W positions, matched with KL(teacher || student).

    With phi(x)_c = softmax over positions of x_c / T and C' = ``channels`` (default C)::

        L = T^2 / (N * C') * sum_{n, c} sum_{p} phi(t)_{ncp} * (log phi(t)_{ncp} - log phi(s)_{ncp})

    ``channels`` is the divisor only: CIRKD's ``CriterionCWD`` reads ``n, c`` from the student map
    *before* its 1x1 alignment conv, so with a channel-aligned student it divides by the student's own
    channel count C_s, not by C (the teacher's).

    Computed with ``log_softmax`` (the reference ``softmax().log()`` can give -inf and NaN gradients).

    Args:
        student: (N, C, H, W) logits or (channel-aligned) features.
        teacher: (N, C, H, W), same shape.
        temperature: T (> 0). Reference: 4 (original CWD and CIRKD's runs); mmrazor uses 1.

    Returns:
        A scalar tensor.
    """
    check_rank(student, 4, "channel_wise_loss student")
    check_same_shape(student, teacher, "channel_wise_loss")
    if temperature <= 0:
        raise ValueError(f"channel_wise_loss: temperature must be > 0, got {temperature}")
    n, c = student.shape[0], channels if channels is not None else student.shape[1]
    if c < 1:
        raise ValueError(f"channel_wise_loss: channels must be >= 1, got {c}")
    log_p_s = F.log_softmax(student.flatten(2) / temperature, dim=2)
    log_p_t = F.log_softmax(teacher.flatten(2) / temperature, dim=2)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()
    return kl / (n * c) * temperature**2
