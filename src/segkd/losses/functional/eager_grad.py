"""Hand-over of gradients that an autograd function computed during its forward pass.

Used by the fused relational losses (:mod:`segkd.losses.functional.relation_kl`,
:mod:`segkd.losses.functional.skd_gram`): their value is a scalar, so the gradient with respect to their
(small) inputs is complete at the end of the forward sweep, and computing it there saves a second sweep
over the pair matrices. The forward stores the gradients in ``ctx.grads``; :func:`take_eager_grads`
scales them by the incoming gradient *in place* and hands them on, so that no second copy of the input's
size is made (autograd moves a lone gradient into ``.grad`` without copying).

A second backward through the same graph (``retain_graph=True``, as ``gradcheck`` does) is served by
rescaling, ``g * (new / first)``, as long as nobody has modified the handed-over tensor (checked with its
version counter) and the first incoming gradient was not zero; otherwise it raises.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor


def take_eager_grads(ctx: Any, grad_out: Tensor, name: str) -> list[Tensor | None]:
    """``ctx.grads`` (computed for an incoming gradient of 1) scaled by ``grad_out``; None stays None.

    Raises:
        RuntimeError: when a needed gradient was not computed (the forward ran with grad mode off), or on
            a second backward that cannot be served (see the module docstring).
    """
    grads = ctx.grads
    for i, grad in enumerate(grads):
        if grad is None and ctx.needs_input_grad[i]:
            raise RuntimeError(f"{name}: the forward ran with grad mode off and cannot be differentiated")
    first = getattr(ctx, "first_scale", None)
    if first is None:  # first backward: scale in place, remember how
        out = [None if g is None else g.mul_(grad_out) for g in grads]
        ctx.first_scale = grad_out.detach().clone()
        ctx.versions = [None if g is None else g._version for g in grads]
        return out
    unchanged = all(g is None or g._version == v for g, v in zip(grads, ctx.versions, strict=True))
    if not unchanged or bool(first == 0):
        raise RuntimeError(f"{name}: a second backward through this graph cannot be served (the gradient "
                           "handed over by the first was modified, or its incoming gradient was zero)")
    ratio = grad_out / first
    return [None if g is None else g * ratio for g in grads]
