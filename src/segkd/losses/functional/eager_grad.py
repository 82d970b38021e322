"""Hand-over of gradients that an autograd function computed during its forward pass.

Used by the fused relational losses (:mod:`segkd.losses.functional.relation_kl`,
:mod:`segkd.losses.functional.skd_gram`): their value is a scalar, so the gradient with respect to their
(small) inputs is complete at the end of the forward sweep, and computing it there saves a second sweep
over the pair matrices. The forward stores the gradients in ``ctx.grads``; :func:`take_eager_grads`
scales them by the incoming gradient *in place* and hands them on, so that no second copy of the input's
size is made (autograd moves a lone gradient into ``.grad`` without copying).

A second backward through the same graph (``retain_graph=True``, as ``gradcheck`` does) finds the
gradients handed over already and recomputes them with the function's own sweep (``again``): correct,
at the cost of one more sweep, in a case training never meets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor


def take_eager_grads(ctx: Any, grad_out: Tensor, name: str,
                     again: Callable[[], list[Tensor | None]]) -> list[Tensor | None]:
    """``ctx.grads`` (computed for an incoming gradient of 1), scaled by ``grad_out`` in place and
    released from ``ctx``; on a second backward ``again()`` recomputes them. None entries stay None.

    Raises:
        RuntimeError: when a needed gradient was not computed (the forward ran with grad mode off).
    """
    grads = ctx.grads
    ctx.grads = None
    if grads is None:
        grads = again()
    for i, grad in enumerate(grads):
        if grad is None and ctx.needs_input_grad[i]:
            raise RuntimeError(f"{name}: the forward ran with grad mode off and cannot be differentiated")
    return [None if g is None else g.mul_(grad_out) for g in grads]
