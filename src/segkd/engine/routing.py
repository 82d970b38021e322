"""Which images each loss term sees when a batch mixes labelled and unlabelled images (``data.unlabeled``).

A micro-batch may carry ``labeled`` (N,) bool (:mod:`segkd.data.mixed`). The student and the teacher run
on all N images; then

- the task terms (CE, aux CE) use the labelled images only: ``CE(up(s.logits[L]), y[L])`` with
  ``L = nonzero(labeled)``, 0 with a zero gradient when ``L`` is empty;
- a term with ``uses_labels = True`` (:class:`~segkd.losses.base.DistillLoss`) gets the student and
  teacher outputs and the :class:`DistillBatch` of the labelled images only (its own shared state, e.g.
  CIRKD's memory queues, is fed from them alone); with no labelled image it is skipped (value 0);
- a term with ``uses_labels = False`` (KD, DIST, CWD, FitNet, AT, pair-wise, holistic, CIRKD mini-batch,
  DSD, KA) gets all N images; its batch's labels are ``ignore_index`` on the unlabelled images;
- a term whose :meth:`~segkd.losses.base.DistillLoss.routed_images` is ``"unlabeled"`` (``pseudo_label``
  with ``images: unlabeled``, its default) gets the unlabelled images only, ``U = nonzero(~labeled)``;
  with no unlabelled image in the batch it is skipped (value 0).

Without ``labeled``, or with every image labelled, every term but the unlabelled-only ones gets the whole
batch, exactly as before.
"""

from __future__ import annotations

from torch import Tensor

from segkd.losses.base import DistillBatch, DistillLoss
from segkd.models.outputs import SegOutput


def labelled_index(labeled: Tensor | None) -> Tensor | None:
    """Batch positions (M,) of the labelled images; None when every image is labelled (or no flags)."""
    if labeled is None or bool(labeled.all()):
        return None
    return labeled.nonzero().squeeze(1)


def supervised_view(
    out: SegOutput, labels: Tensor, index: Tensor | None, ignore_index: int
) -> tuple[Tensor, Tensor | None, Tensor]:
    """(logits, aux logits, labels) the task CE terms see: the labelled images' (all when ``index`` is None);
    with no labelled image, the whole batch with every label ``ignore_index`` (CE 0, zero gradient)."""
    if index is None:
        return out.logits, out.aux_logits, labels
    if index.numel() == 0:
        return out.logits, out.aux_logits, labels.new_full(labels.shape, ignore_index)
    aux = None if out.aux_logits is None else out.aux_logits[index]
    return out.logits[index], aux, labels[index]


class TermInputs:
    """The (student, teacher, batch) each term is called with in one forward (see the module docstring).

    Built once per forward, so the terms of each kind share one :class:`DistillBatch` (and its ``memo``).
    """

    def __init__(
        self,
        student: SegOutput,
        teacher: SegOutput,
        images: Tensor,
        labels: Tensor,
        index: Tensor | None,
        ignore_index: int,
    ) -> None:
        self.index = index
        self._unlabelled_mask: Tensor | None = None
        if index is not None:  # the unlabelled images' labels never reach a term, whatever they held
            unlabelled = labels.new_ones(labels.shape[0], dtype=bool)
            unlabelled[index] = False
            labels = labels.masked_fill(unlabelled[:, None, None], ignore_index)
            self._unlabelled_mask = unlabelled
        self.student, self.teacher, self.images, self.labels = student, teacher, images, labels
        self.labelled_images = labels.shape[0] if index is None else int(index.numel())
        self.all = DistillBatch(images=images, labels=labels, labelled_images=self.labelled_images)
        self._labelled: tuple[SegOutput, SegOutput, DistillBatch] | None = None
        self._unlabelled: tuple[SegOutput, SegOutput, DistillBatch] | None = None

    def for_term(self, loss: DistillLoss) -> tuple[SegOutput, SegOutput, DistillBatch] | None:
        """The arguments of ``loss``; None when the images it reads are not in the batch (skip it)."""
        if hasattr(loss, "routed_images"):
            images = loss.routed_images()
        else:  # any module with the older contract: uses_labels alone
            images = "labeled" if getattr(loss, "uses_labels", True) else "all"
        if images == "unlabeled":
            if self._unlabelled is None and self._unlabelled_mask is not None:
                positions = self._unlabelled_mask.nonzero().squeeze(1)  # only when a term asks (a sync)
                self._unlabelled = self._subset(positions) if positions.numel() else None
            return self._unlabelled
        if self.index is None or images == "all":
            return self.student, self.teacher, self.all
        if self.index.numel() == 0:
            return None
        if self._labelled is None:
            self._labelled = self._subset(self.index)
        return self._labelled

    def _subset(self, i: Tensor) -> tuple[SegOutput, SegOutput, DistillBatch]:
        batch = DistillBatch(images=self.images[i], labels=self.labels[i],
                             labelled_images=self.labelled_images)
        return self.student.select(i), self.teacher.select(i), batch
