"""Run under ``python -m torch.distributed.run --nproc_per_node=2 tests/dist_cirkd_check.py`` (gloo, CPU).

Checks (raising AssertionError on failure, printing DIST_CIRKD_OK on rank 0 on success):
1. ``cirkd_batch_p2p`` with ``gather: true``: the mean over ranks of the per-rank values equals the loss of
   one process holding the whole global batch, and each rank's gradient on its own feats equals
   world_size times the single-process gradient of those images (what DDP's averaging turns back into
   the single-process gradient).
2. ``cirkd_memory_p2p`` + ``cirkd_memory_p2r`` fed different local batches for several steps: the queues
   are identical on every rank, and equal to those of a single process fed the whole global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from segkd.distributed import all_reduce, rank, world_size
from segkd.losses import LOSSES, DistillBatch, DistillSpec
from segkd.models.outputs import SegOutput

LOCAL_BATCH = 2


def out(feat: torch.Tensor) -> SegOutput:
    return SegOutput(logits=feat.new_zeros(feat.shape[0], 1, 1, 1), feat=feat)


def global_batch(step: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same global batch on every rank (seeded), float64 feats."""
    g = torch.Generator().manual_seed(100 + step)
    fs = torch.randn(n, 4, 4, 5, generator=g, dtype=torch.float64)
    ft = torch.randn(n, 6, 4, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (n, 8, 10), generator=g)
    labels[labels == 3] = 255
    return fs, ft, labels


def check_batch_gather() -> None:
    w, r = world_size(), rank()
    fs_all, ft_all, labels = global_batch(0, LOCAL_BATCH * w)
    spec = DistillSpec(num_classes=3, student_feat_channels=4, teacher_feat_channels=6)
    loss = LOSSES.build("cirkd_batch_p2p", spec=spec, gather=True, block=7)
    local = slice(r * LOCAL_BATCH, (r + 1) * LOCAL_BATCH)
    fs = fs_all[local].clone().requires_grad_(True)
    value = loss(out(fs), out(ft_all[local]), DistillBatch(images=torch.zeros(1), labels=labels[local]))
    value.backward()
    mean_value = all_reduce(value.detach().clone(), op="mean")

    single = LOSSES.build("cirkd_batch_p2p", spec=spec, gather=False)
    fs_single = fs_all.clone().requires_grad_(True)
    ref = single(out(fs_single), out(ft_all), DistillBatch(images=torch.zeros(1), labels=labels))
    ref.backward()
    assert torch.allclose(mean_value, ref.detach(), rtol=1e-10), (mean_value.item(), ref.item())
    assert torch.allclose(fs.grad / w, fs_single.grad[local], rtol=1e-8, atol=1e-14)


def check_memory_queues_identical() -> None:
    w, r = world_size(), rank()
    spec = DistillSpec(num_classes=3, student_feat_channels=4, teacher_feat_channels=6)
    opts = dict(pixel_memory_size=40, region_memory_size=6, pixel_contrast_size=9, region_contrast_size=6)
    p2p, p2r = (LOSSES.build(n, spec=spec, **opts) for n in ("cirkd_memory_p2p", "cirkd_memory_p2r"))
    spec1 = DistillSpec(num_classes=3, student_feat_channels=4, teacher_feat_channels=6)
    ref_p2p, ref_p2r = (LOSSES.build(n, spec=spec1, **opts) for n in ("cirkd_memory_p2p", "cirkd_memory_p2r"))
    local = slice(r * LOCAL_BATCH, (r + 1) * LOCAL_BATCH)
    for step in range(4):
        fs_all, ft_all, labels = (
            x.float() if x.is_floating_point() else x for x in global_batch(step, 2 * w)
        )
        batch = DistillBatch(images=torch.zeros(1), labels=labels[local])
        s, t = out(fs_all[local].clone().requires_grad_(True)), out(ft_all[local])
        (p2p(s, t, batch) + p2r(s, t, batch)).backward()
        # single-process reference fed the whole batch: enqueue only (no collective inside)
        mem = ref_p2p.shared_memory
        ref_feat = torch.nn.functional.normalize(ft_all, dim=1)
        mem.enqueue(ref_feat, labels_at(labels, ft_all), mem._generator(ft_all.device))
        mem.step += 1
    state, ref_state = spec.shared.modules.state_dict(), spec1.shared.modules.state_dict()
    for key in (
        "cirkd_memory.pixel_queue.queue",
        "cirkd_memory.region_queue.queue",
        "cirkd_memory.pixel_queue.ptr",
        "cirkd_memory.region_queue.ptr",
        "cirkd_memory.step",
    ):
        mine = state[key]
        gathered = [torch.empty_like(mine) for _ in range(w)]
        dist.all_gather(gathered, mine)
        assert all(torch.equal(g, gathered[0]) for g in gathered), f"{key} differs across ranks"
        assert torch.equal(mine, ref_state[key]), f"{key} differs from the single-process memory"
    assert state["cirkd_memory.pixel_queue.ptr"].sum() > 0 and state["cirkd_memory.step"].item() == 4


def labels_at(labels: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(labels[:, None].float(), size=feat.shape[-2:], mode="nearest")[
        :, 0
    ].long()


def main() -> None:
    dist.init_process_group("gloo")
    try:
        assert world_size() > 1, "run with torchrun --nproc_per_node=2"
        check_batch_gather()
        check_memory_queues_identical()
        dist.barrier()
        if rank() == 0:
            print("DIST_CIRKD_OK", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
