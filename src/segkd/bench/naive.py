"""Naive all-at-once references of the relational losses, kept only to benchmark the blocked versions.

They materialise every pixel-pair matrix at once, which is what the reference code does and what the
blocked implementations in :mod:`segkd.losses` avoid. Values equal the registered losses with their
default options (checked by tests/test_bench.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from segkd.losses.functional.common import resize_to
from segkd.losses.functional.skd import skd_pool


def skd_pairwise_naive(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """SKD pair-wise loss, CIRKD defaults (2x2 max pool, then ``F.normalize``, gradient through the norm),
    all at once.

    ``L = 1/(N M^2) sum_n ||A^s_n - A^t_n||_F^2`` with ``A_n = F_n^T F_n`` of shape (N, M, M) held whole.
    """
    size = tuple(teacher_feat.shape[-2:])
    nodes = [F.normalize(skd_pool(x, "cirkd", 0.5, reference_size=size), p=2, dim=1).flatten(2)
             for x in (resize_to(student_feat, size), teacher_feat)]
    a_s, a_t = (torch.bmm(x.transpose(1, 2), x) for x in nodes)  # (N, M, M) each
    n, m = a_s.shape[:2]
    return (a_s - a_t).pow(2).sum() / (n * m * m)


def cirkd_batch_p2p_naive(student_feat: Tensor, teacher_feat: Tensor, temperature: float = 0.1) -> Tensor:
    """CIRKD mini-batch pixel-to-pixel loss with all B^2 pair matrices at once, (B, B, P, P).

    ``L = 1/(B^2 P) sum_{i,j,p} KL(softmax(S^t_ij[p]/tau) || softmax(S^s_ij[p]/tau))``, S_ij = F_i F_j^T.
    """
    fs, ft = (F.normalize(x.flatten(2).transpose(1, 2), dim=2) for x in (student_feat, teacher_feat))
    s_s = torch.einsum("ipc,jqc->ijpq", fs, fs) / temperature
    s_t = torch.einsum("ipc,jqc->ijpq", ft, ft) / temperature
    b, p = fs.shape[:2]
    kl = F.kl_div(F.log_softmax(s_s, -1), F.log_softmax(s_t, -1), reduction="sum", log_target=True)
    return kl / (b * b * p)


NAIVE = {"skd_pairwise": skd_pairwise_naive, "cirkd_batch_p2p": cirkd_batch_p2p_naive}


def naive_bytes(name: str, batch: int, h: int, w: int) -> int:
    """Size of one of the largest matrices the naive version holds (float32); peak is a few times this."""
    if name == "skd_pairwise":
        m = ((h + 1) // 2) * ((w + 1) // 2)
        return 4 * batch * m * m
    p = h * w
    return 4 * batch * batch * p * p
