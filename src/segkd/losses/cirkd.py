"""CIRKD: cross-image relational knowledge distillation (Yang et al., CVPR 2022).

Three registered terms, each with its own weight in the config (reference total on Cityscapes:
CE + 0.4 aux + 1 KD + 1 ``cirkd_batch_p2p`` + 0.1 ``cirkd_memory_p2p`` + 0.1 ``cirkd_memory_p2r``):

- ``cirkd_batch_p2p``: pixel-to-pixel relations between every ordered pair of images of the mini-batch
  (:func:`segkd.losses.functional.cirkd.cross_image_pixel_kd`), computed in row blocks.
- ``cirkd_memory_p2p`` / ``cirkd_memory_p2r``: student anchors vs teacher pixel / region embeddings kept in
  per-class memory queues (:func:`segkd.losses.functional.cirkd.memory_contrast_kd`).

Sharing (as in the reference, where one module owns one projection head and both queues): the two memory
terms built for the *same* :class:`DistillSpec` object with the same memory options share one
:class:`CIRKDMemory` (projector + queues), found in a small cache stored on the spec object itself (no
process-global state, so nothing survives across runs or tests). The first term built owns it as a
sub-module (its parameters are optimised and its buffers checkpointed through that term's
``state_dict``); the second keeps a plain reference, so no parameter is registered twice. Within one
training step the memory enqueues once and projects the student once, whatever the number of terms.

Difference from the reference code: it drew enqueue pixels and contrast sets with each GPU's own RNG, so
its queues diverged across GPUs. Here the teacher feats and labels are gathered from all processes and
every random draw uses a generator seeded from ``(seed, step)``, identical on every rank, so the queues
(and contrast sets) stay identical across ranks and are reproducible after resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segkd.distributed import all_gather_tensor, all_gather_with_grad
from segkd.losses.base import LOSSES, DistillBatch, DistillLoss, DistillSpec
from segkd.losses.functional.cirkd import cross_image_pixel_kd, memory_contrast_kd
from segkd.losses.functional.common import downsample_labels, resize_to
from segkd.losses.queues import ClassQueue, rank_within_group
from segkd.models.outputs import SegOutput


@LOSSES.register("cirkd_batch_p2p")
class CIRKDBatchP2P(DistillLoss):
    """Mini-batch cross-image pixel-to-pixel distillation on ``feat`` (no projector, no parameters).

    Options (defaults = reference ``train_cirkd.py``):
        temperature: similarity temperature tau (0.1).
        block: anchor rows per block; peak memory grows with ``block * images * h * w``. Default (None):
            as many rows as keep one block within 4 Mi similarities (16 MiB in float32), so small
            batches run in one block and are not recomputed in backward.
        pool: 2x2 average pooling (ceil mode) of both feats first; the reference class has this switch
            but its training script leaves it off (False).
        gather: also compare the local anchors with every other rank's images (teacher feats gathered
            without, student feats with autograd). Each rank computes rows of its own images against all
            gathered images; the mean of the ranks' values equals the single-process loss on the whole
            global batch, and so does the DDP-averaged gradient. No-op without a process group (False,
            as in the reference, where the gather lines are commented out).
        matmul_dtype: None (default: exact) or ``bfloat16`` / ``float16``: the similarity and gradient
            matrix products in that precision (GPU tensor cores), softmaxes and KL in float32; opt-in
            speed path with the bound stated in :mod:`segkd.losses.functional.relation_kl`.
    A teacher feat of another spatial size is bilinearly resized to the student's.
    """

    uses_labels = False  # never reads batch.labels: trains on unlabelled images too

    def __init__(
        self,
        spec: DistillSpec,
        *,
        temperature: float = 0.1,
        block: int | None = None,
        pool: bool = False,
        gather: bool = False,
        matmul_dtype: str | None = None,
    ) -> None:
        super().__init__()
        if block is not None and block < 1:
            raise ValueError(f"cirkd_batch_p2p: option 'block' must be >= 1, got {block}")
        if matmul_dtype not in (None, "bfloat16", "float16"):
            raise ValueError(f"cirkd_batch_p2p: option 'matmul_dtype' must be null, 'bfloat16' or 'float16', "
                             f"got '{matmul_dtype}'")
        self.temperature, self.block, self.pool, self.gather = temperature, block, pool, gather
        self.matmul_dtype = None if matmul_dtype is None else getattr(torch, matmul_dtype)

    def teacher_reads(self) -> frozenset[str]:
        return frozenset({"feat"})

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        fs = student.feat
        ft = resize_to(teacher.feat.detach(), tuple(fs.shape[-2:]))
        if self.pool:
            fs = F.avg_pool2d(fs, kernel_size=2, stride=2, ceil_mode=True)
            ft = F.avg_pool2d(ft, kernel_size=2, stride=2, ceil_mode=True)
        cs, ct = (all_gather_with_grad(fs), all_gather_tensor(ft)) if self.gather else (fs, ft)
        return cross_image_pixel_kd(fs, ft, cs, ct, temperature=self.temperature, block=self.block,
                                    matmul_dtype=self.matmul_dtype)


def build_projector(in_channels: int, out_channels: int) -> nn.Sequential:
    """CIRKD projection head: 1x1 conv Cs->Ct, BN, ReLU, 1x1 conv Ct->Ct, no biases.

    The reference uses SyncBatchNorm; convert with :meth:`nn.SyncBatchNorm.convert_sync_batchnorm` for DDP.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 1, bias=False),
    )


@dataclass
class MemoryStep:
    """What one training step's memory terms consume.

    ``anchor_s`` (M, Ct) projected + normalised student anchors, ``anchor_t`` (M, Ct) normalised teacher
    anchors (M = non-ignored pixels at feat resolution), ``pixels`` (K * (4096 // K + 1), Ct) and
    ``regions`` (K * (1024 // K + 1), Ct) contrast sets (None when that queue is not used).
    """

    anchor_s: Tensor
    anchor_t: Tensor
    pixels: Tensor | None
    regions: Tensor | None


class CIRKDMemory(nn.Module):
    """Projection head + per-class teacher pixel and region queues, shared by the two memory terms.

    Buffers: ``pixel_queue.*``, ``region_queue.*`` (see :class:`ClassQueue`) and ``step`` (enqueue count,
    which seeds the rank-identical random draws). Queues are created on demand by :meth:`require`, so a
    run with only one memory term does not allocate the other (large) queue. One instance per distiller
    and memory options, in :class:`~segkd.losses.base.SharedModules`; its per-step output is computed once
    and kept in the forward's ``batch.memo`` for the other term.
    """

    def __init__(
        self,
        spec: DistillSpec,
        *,
        pixel_memory_size: int = 20000,
        region_memory_size: int = 2000,
        pixel_contrast_size: int = 4096,
        region_contrast_size: int = 1024,
        pixels_per_update: int = 16,
        seed: int = 0,
        enqueue: str = "segkd",
    ) -> None:
        super().__init__()
        if enqueue not in ("segkd", "reference"):
            raise ValueError(f"cirkd memory: option 'enqueue' must be 'segkd' or 'reference', "
                             f"got {enqueue!r}")
        self.enqueue_mode = enqueue
        self.num_classes, self.dim = spec.num_classes, spec.teacher_feat_channels
        self.ignore_index, self.seed = spec.ignore_index, seed
        self.memory_sizes = {"pixel": pixel_memory_size, "region": region_memory_size}
        # Per class, as train_cirkd.py passes them: contrast_size // num_classes + 1.
        self.per_class = {
            "pixel": pixel_contrast_size // self.num_classes + 1,
            "region": region_contrast_size // self.num_classes + 1,
        }
        self.pixels_per_update = pixels_per_update
        self.options = dict(
            pixel_memory_size=pixel_memory_size,
            region_memory_size=region_memory_size,
            pixel_contrast_size=pixel_contrast_size,
            region_contrast_size=region_contrast_size,
            pixels_per_update=pixels_per_update,
            seed=seed,
            enqueue=enqueue,
        )
        self.projector = build_projector(spec.student_feat_channels, spec.teacher_feat_channels)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.pixel_queue: ClassQueue | None = None
        self.region_queue: ClassQueue | None = None

    def require(self, kind: str) -> None:
        """Create the ``kind`` ("pixel" or "region") queue if missing."""
        name = f"{kind}_queue"
        if getattr(self, name) is None:
            seed = self.seed + (1 if kind == "region" else 0)
            queue = ClassQueue(self.num_classes, self.memory_sizes[kind], self.dim, seed=seed)
            setattr(self, name, queue.to(self.step.device))

    def _generator(self, device: torch.device) -> torch.Generator:
        """A generator seeded from (seed, step): the same draws on every rank and after resume."""
        return torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + int(self.step))

    @torch.no_grad()
    def enqueue(self, t_feat: Tensor, labels: Tensor, gen: torch.Generator) -> None:
        """Push the (gathered) batch: per image and present class one region and <= 16 random pixels.

        ``t_feat`` (B, D, h, w) L2-normalised teacher feat, ``labels`` (B, h, w) at feat resolution.
        """
        feats = t_feat.flatten(2).transpose(1, 2).reshape(-1, t_feat.shape[1])  # (B*P, D)
        lab = labels.reshape(-1)
        valid = (lab >= 0) & (lab < self.num_classes)
        image = torch.arange(labels.shape[0], device=lab.device).repeat_interleave(labels[0].numel())
        group = (image * self.num_classes + lab)[valid]  # (image, class) id, ordered by image then class
        feats, lab = feats[valid], lab[valid]
        if self.region_queue is not None:
            self.region_queue.push(*self._regions(feats, group, labels.shape[0]))
        if self.pixel_queue is not None and self.enqueue_mode == "reference":
            self._enqueue_pixels_reference(t_feat, labels, gen)
        elif self.pixel_queue is not None:
            keys = torch.rand(group.shape[0], generator=gen, device=group.device)
            order = torch.argsort(keys)
            order = order[torch.sort(group[order], stable=True).indices]  # by group, random inside a group
            keep = order[rank_within_group(group[order]) < self.pixels_per_update]
            self.pixel_queue.push(feats[keep], lab[keep])

    def _enqueue_pixels_reference(self, t_feat: Tensor, labels: Tensor, gen: torch.Generator) -> None:
        """CIRKD's ``_dequeue_and_enqueue`` pixel branch, reproduced (``enqueue: reference``).

        Per image, per present class (ascending) with n pixels: ``perm = randperm(n)``, k = min(n, 16);
        the written embeddings are those at *image* positions ``perm[:k]`` (raster order, whatever their
        class: a subset of positions 0..n-1, not of the class's pixels), then
        :meth:`ClassQueue.push_block_reference` (last k slots and pointer reset at the end).
        """
        queue = self.pixel_queue
        assert queue is not None
        for image in range(labels.shape[0]):
            feats = t_feat[image].flatten(1)  # (D, h*w), every position of the image
            lab = labels[image].reshape(-1)
            valid = lab[(lab >= 0) & (lab < self.num_classes)]
            for cls in torch.unique(valid).tolist():
                n = int((lab == cls).sum())
                perm = torch.randperm(n, generator=gen, device=gen.device)
                k = min(n, self.pixels_per_update)
                picked = F.normalize(feats[:, perm[:k].to(feats.device)].t(), p=2, dim=1)
                queue.push_block_reference(picked, cls)

    def _regions(self, feats: Tensor, group: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        """Renormalised mean embedding of each present (image, class): ((R, D), classes (R,))."""
        n_groups = batch * self.num_classes
        sums = feats.new_zeros(n_groups, feats.shape[1]).index_add_(0, group, feats)
        present = torch.bincount(group, minlength=n_groups) > 0
        ids = torch.arange(n_groups, device=feats.device)[present]
        return F.normalize(sums[present], p=2, dim=1), ids % self.num_classes

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> MemoryStep:
        """Project, enqueue (training mode only) and sample, once per forward: the first term computes
        it, the other reads it from ``batch.memo``."""
        key = f"cirkd_memory:{id(self)}"
        if key not in batch.memo:
            batch.memo[key] = self._compute(student, teacher, batch)
        return batch.memo[key]

    def _compute(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> MemoryStep:
        size = tuple(student.feat.shape[-2:])
        s = F.normalize(self.projector(student.feat), p=2, dim=1)
        t = F.normalize(resize_to(teacher.feat.detach(), size), p=2, dim=1)
        labels = downsample_labels(batch.labels, size)
        gen = self._generator(s.device)
        if self.training:
            self.enqueue(all_gather_tensor(t), all_gather_tensor(labels), gen)
            self.step += 1
        flat = labels.reshape(-1)
        valid = (flat >= 0) & (flat < self.num_classes)
        anchor_s = s.permute(0, 2, 3, 1).reshape(-1, s.shape[1])[valid]
        anchor_t = t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])[valid]
        pixels, regions = (
            None if q is None else q.sample(self.per_class[kind], gen)
            for q, kind in ((self.pixel_queue, "pixel"), (self.region_queue, "region"))
        )
        return MemoryStep(anchor_s, anchor_t, pixels, regions)


def shared_memory(spec: DistillSpec, kind: str, options: dict) -> CIRKDMemory:
    """The distiller's :class:`CIRKDMemory` for these options (created on first use) with a ``kind``
    queue; named ``cirkd_memory`` (``cirkd_memory_<n>`` for further option sets) in ``spec.shared``."""
    memory = spec.shared.find_or_create(
        "cirkd_memory",
        lambda m: isinstance(m, CIRKDMemory) and m.options == options,
        lambda: CIRKDMemory(spec, **options),
    )
    memory.require(kind)
    return memory


class _CIRKDMemoryTerm(DistillLoss):
    """Common body of the two memory terms; ``kind`` is "pixel" or "region"."""

    uses_labels = True  # anchors and enqueued pixels / regions are labelled pixels, by class

    kind = ""
    live_teacher_reason = ("its memory queues keep teacher embeddings across iterations; segkd feeds them "
                           "from the live teacher only")

    def __init__(
        self,
        spec: DistillSpec,
        *,
        temperature: float = 0.1,
        kd_temperature: float = 1.0,
        pixel_memory_size: int = 20000,
        region_memory_size: int = 2000,
        pixel_contrast_size: int = 4096,
        region_contrast_size: int = 1024,
        pixels_per_update: int = 16,
        seed: int = 0,
        share: bool = True,
        enqueue: str = "segkd",
    ) -> None:
        super().__init__()
        self.temperature, self.kd_temperature = temperature, kd_temperature
        options = dict(
            pixel_memory_size=pixel_memory_size,
            region_memory_size=region_memory_size,
            pixel_contrast_size=pixel_contrast_size,
            region_contrast_size=region_contrast_size,
            pixels_per_update=pixels_per_update,
            seed=seed,
            enqueue=enqueue,
        )
        if share:  # a plain reference: the distiller owns the module (``shared``), not this term
            self._shared = (shared_memory(spec, self.kind, options),)
        else:
            self.memory = CIRKDMemory(spec, **options)
            self.memory.require(self.kind)

    @property
    def shared_memory(self) -> CIRKDMemory:
        return self.memory if "memory" in self._modules else self._shared[0]

    def shared_references(self) -> list[nn.Module]:
        return list(getattr(self, "_shared", ()))

    def forward(self, student: SegOutput, teacher: SegOutput, batch: DistillBatch) -> Tensor:
        step = self.shared_memory(student, teacher, batch)
        contrast = step.pixels if self.kind == "pixel" else step.regions
        return memory_contrast_kd(
            step.anchor_s,
            step.anchor_t,
            contrast,
            temperature=self.temperature,
            kd_temperature=self.kd_temperature,
        )


@LOSSES.register("cirkd_memory_p2p")
class CIRKDMemoryP2P(_CIRKDMemoryTerm):
    """Memory-based pixel-to-pixel term: anchors vs 4096 teacher pixel embeddings from the queues.

    Options: ``temperature`` tau (0.1), ``kd_temperature`` (1), queue/contrast sizes (20000, 2000, 4096,
    1024), ``pixels_per_update`` (16), ``seed`` (0), ``share`` (True: share projector and queues with a
    ``cirkd_memory_p2r`` term built for the same spec and memory options), ``enqueue``:

    - ``"segkd"`` (default, a deliberate deviation): up to 16 random pixels *of the class* per image and
      class, written into a wrapping ring buffer.
    - ``"reference"``: CIRKD ``losses/cirkd_memory.py`` exactly: ``perm = randperm(n_class_pixels)``
      indexes the *image's* positions (so the entries come from positions 0..n-1 in raster order,
      mostly other classes' pixels), and a write that reaches the end of the buffer overwrites the last
      k slots and resets the pointer to 0. Draws use segkd's seeded generator, not the global RNG.
    """

    kind = "pixel"


@LOSSES.register("cirkd_memory_p2r")
class CIRKDMemoryP2R(_CIRKDMemoryTerm):
    """Memory-based pixel-to-region term: anchors vs 1024 teacher region embeddings (options as p2p)."""

    kind = "region"
