"""How a cached map is stored: ``float32`` (exact), ``float16``, or ``topk`` for class scores.

``topk`` (logits only; a ``feat`` map is stored as float16): per pixel the k largest logits (float16)
with their class ids (uint8, int16 beyond 255 classes) plus one shared rest value r (float16) given to
every other class, chosen so that the other classes keep their total softmax mass at T = 1:

    (K - k) * exp(r) = sum_{j not in top-k} exp(z_j)   =>   r = logsumexp_{j not in top-k}(z_j) - log(K - k)

so the decoded distribution keeps the top-k probabilities exactly (up to float16) and spreads the rest
uniformly (the FKD / ReLabel-style sparse soft label, Shen & Xing ECCV 2022; Yun et al. CVPR 2021).
Storage per pixel: 2K bytes (float16) against k * 3 + 2 bytes (top-k, K <= 256).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

CODECS = ("float32", "float16", "topk")
LOGIT_KEYS = ("logits", "aux_logits")


def encode(value: Tensor, codec: str, key: str, k: int = 4) -> dict[str, Any]:
    """Encode one (C, h, w) map. ``topk`` applies to class scores (``LOGIT_KEYS``); other maps fall back to
    float16. Returns plain tensors and strings (safe for ``weights_only`` loading)."""
    if codec not in CODECS:
        raise ValueError(f"teacher cache: codec must be one of {', '.join(CODECS)}, got '{codec}'")
    value = value.detach().float().cpu()
    if codec == "float32":
        return {"codec": "float32", "data": value.contiguous()}
    if codec == "float16" or key not in LOGIT_KEYS or k >= value.shape[0]:
        return {"codec": "float16", "data": value.half().contiguous()}
    return _encode_topk(value, k)


def _encode_topk(value: Tensor, k: int) -> dict[str, Any]:
    classes = value.shape[0]
    if k < 1:
        raise ValueError(f"teacher cache: topk needs k >= 1, got {k}")
    top, index = value.topk(k, dim=0)
    rest_mask = torch.ones_like(value, dtype=torch.bool).scatter_(0, index, False)
    rest = value.masked_fill(~rest_mask, float("-inf")).logsumexp(0) - math.log(classes - k)
    index_dtype = torch.uint8 if classes <= 256 else torch.int16
    return {"codec": "topk", "classes": classes, "values": top.half().contiguous(),
            "indices": index.to(index_dtype).contiguous(), "rest": rest.half().contiguous()}


def decode(entry: dict[str, Any]) -> Tensor:
    """The dense float32 (C, h, w) map of an encoded entry."""
    codec = entry["codec"]
    if codec in ("float32", "float16"):
        return entry["data"].float()
    if codec != "topk":
        raise ValueError(f"teacher cache: unknown codec '{codec}' in a cache entry")
    rest = entry["rest"].float()
    dense = rest.unsqueeze(0).expand(int(entry["classes"]), *rest.shape).clone()
    return dense.scatter_(0, entry["indices"].long(), entry["values"].float())


def nbytes(entry: dict[str, Any]) -> int:
    """Bytes of the tensors of one encoded entry."""
    return sum(v.numel() * v.element_size() for v in entry.values() if isinstance(v, Tensor))


def pixel_kl(reference: Tensor, approx: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean over pixels of ``KL(softmax(reference / T) || softmax(approx / T))`` for (N, K, h, w) or
    (K, h, w) logits: how far a stored / replayed target is from the exact one, in nats per pixel."""
    ref = F.log_softmax(reference.double() / temperature, dim=-3)
    app = F.log_softmax(approx.double() / temperature, dim=-3)
    return (ref.exp() * (ref - app)).sum(-3).mean()
