"""CIRKD losses: hand-computed values, blocked == naive, gradients, queues, sharing, checkpoint state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segkd.losses import LOSSES, DistillBatch, DistillSpec
from segkd.losses.functional.cirkd import cross_image_pixel_kd, memory_contrast_kd
from segkd.losses.queues import ClassQueue, rank_within_group
from segkd.models.outputs import SegOutput


def naive_batch_p2p(fs: torch.Tensor, ft: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Straight transcription of the paper: every pair (i, j), full P x P matrices, batchmean KL."""
    b = fs.shape[0]
    fs = F.normalize(fs, dim=1).flatten(2)
    ft = F.normalize(ft, dim=1).flatten(2)
    total = fs.new_zeros(())
    for i in range(b):
        for j in range(b):
            s = fs[i].T @ fs[j] / tau
            t = ft[i].T @ ft[j] / tau
            total = total + F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")
    return total / b**2


def out(feat: torch.Tensor) -> SegOutput:
    return SegOutput(logits=feat.new_zeros(feat.shape[0], 1, 1, 1), feat=feat)


# ---------------------------------------------------------------- mini-batch pixel-to-pixel


def test_batch_p2p_hand_computed() -> None:
    # C = 1: normalised pixels are +-1. Image 1 student (1, -1), image 2 student (1, 1); teacher all ones,
    # so every teacher row is uniform. Pairs (1,1) and (2,1) have student rows (1,-1)/tau, i.e. per row
    # KL(uniform || softmax(1, -1)) = 1 - ln 2 + ln(1 + e^-2) = 0.4337808304830272; pairs (1,2) and (2,2)
    # have constant student rows -> 0. Mean over 4 pairs: 0.2168904152415136.
    fs = torch.tensor([[[[1.0, -1.0]]], [[[1.0, 1.0]]]], dtype=torch.float64)
    ft = torch.ones(2, 3, 1, 2, dtype=torch.float64)
    for block in (1, 2, 3, 100):
        value = cross_image_pixel_kd(fs, ft, temperature=1.0, block=block)
        assert value.item() == pytest.approx(0.2168904152415136, rel=1e-12)
    # tau = 0.5 doubles the logits (2, -2): 2 - ln 2 + ln(1 + e^-4) = 1.3250027473578642, halved over pairs
    assert cross_image_pixel_kd(fs, ft, temperature=0.5).item() == pytest.approx(
        1.3250027473578642 / 2, rel=1e-9
    )


@pytest.mark.parametrize("block", [1, 7, 24, 1000])
def test_batch_p2p_blocked_equals_naive_value_and_grad(block: int) -> None:
    g = torch.Generator().manual_seed(0)
    fs = torch.randn(3, 5, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    ft = torch.randn(3, 8, 4, 6, generator=g, dtype=torch.float64)
    blocked = cross_image_pixel_kd(fs, ft, temperature=0.1, block=block)
    (g_blocked,) = torch.autograd.grad(blocked, fs)
    naive = naive_batch_p2p(fs, ft, tau=0.1)
    (g_naive,) = torch.autograd.grad(naive, fs)
    assert blocked.item() == pytest.approx(naive.item(), rel=1e-6)
    assert torch.allclose(g_blocked, g_naive, rtol=1e-6, atol=1e-12)


def test_batch_p2p_peak_saved_memory_grows_with_one_block() -> None:
    """Tensors kept for backward must not include all B^2 P^2 similarities (checkpointed blocks)."""
    fs = torch.randn(4, 8, 8, 8, requires_grad=True)
    ft = torch.randn(4, 8, 8, 8)

    def saved_elements(fn) -> int:
        storages: dict[int, int] = {}  # unique storages: views of one tensor are counted once

        def pack(t: torch.Tensor) -> torch.Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes() // t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sum(storages.values())

    all_pairs = 4 * 4 * 64 * 64
    assert saved_elements(lambda: cross_image_pixel_kd(fs, ft, block=16)) < all_pairs / 4
    assert saved_elements(lambda: naive_batch_p2p(fs, ft)) >= all_pairs  # the naive version keeps them all


def test_batch_p2p_gradcheck() -> None:
    fs = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    ft = torch.randn(2, 4, 2, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: cross_image_pixel_kd(x, ft, temperature=0.5, block=3), (fs,))


def test_batch_p2p_zero_for_identical_and_nonnegative() -> None:
    f = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    assert cross_image_pixel_kd(f, f * 3.0).item() == pytest.approx(0.0, abs=1e-12)  # scale-invariant
    assert cross_image_pixel_kd(torch.randn(2, 6, 3, 5), torch.randn(2, 9, 3, 5)).item() > 0


def test_batch_p2p_module_resizes_teacher_grad_only_to_student() -> None:
    spec = DistillSpec(num_classes=3, student_feat_channels=4, teacher_feat_channels=6)
    loss = LOSSES.build("cirkd_batch_p2p", spec=spec, block=5)
    fs = torch.randn(2, 4, 3, 4, requires_grad=True)
    ft = torch.randn(2, 6, 6, 8, requires_grad=True)  # teacher at output stride 4 vs student at 8
    value = loss(
        out(fs), out(ft), DistillBatch(images=torch.zeros(2, 3, 24, 32), labels=torch.zeros(2, 24, 32))
    )
    value.backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert ft.grad is None
    expected = naive_batch_p2p(fs.detach(), F.interpolate(ft.detach(), size=(3, 4), mode="bilinear"))
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_batch_p2p_pool_option_and_gather_noop_single_process() -> None:
    spec = DistillSpec(num_classes=3, student_feat_channels=4, teacher_feat_channels=4)
    fs, ft = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    batch = DistillBatch(images=torch.zeros(2, 3, 40, 40), labels=torch.zeros(2, 40, 40))
    pooled = LOSSES.build("cirkd_batch_p2p", spec=spec, pool=True)(out(fs), out(ft), batch)
    # 5x5 -> 3x3 with ceil mode: the last row/column averages a single pixel
    assert pooled.item() == pytest.approx(
        naive_batch_p2p(F.avg_pool2d(fs, 2, ceil_mode=True), F.avg_pool2d(ft, 2, ceil_mode=True)).item(),
        rel=1e-5,
    )
    gathered = LOSSES.build("cirkd_batch_p2p", spec=spec, gather=True)(out(fs), out(ft), batch)
    assert gathered.item() == pytest.approx(naive_batch_p2p(fs, ft).item(), rel=1e-5)


# ---------------------------------------------------------------- memory contrast KD (functional)


def test_memory_contrast_kd_hand_computed() -> None:
    # s logits (1, 0), t logits (0, 1): KL = sigma(1) - sigma(-1) = tanh(1/2) = 0.46211715726000974
    s = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    q = torch.eye(2, dtype=torch.float64)
    assert memory_contrast_kd(s, t, q, temperature=1.0).item() == pytest.approx(
        0.46211715726000974, rel=1e-12
    )
    # tau = 0.5: logits doubled, KL = 2 tanh(1) = 1.5231883119115293
    assert memory_contrast_kd(s, t, q, temperature=0.5).item() == pytest.approx(1.5231883119115293, rel=1e-12)
    # second anchor identical to its teacher adds 0; mean over 2 anchors halves the value
    s2, t2 = torch.cat([s, t]), torch.cat([t, t])
    assert memory_contrast_kd(s2, t2, q, temperature=1.0).item() == pytest.approx(
        0.23105857863000487, rel=1e-12
    )
    # kd temperature T = 2 on tau = 1: logits (0.5, 0) vs (0, 0.5): KL = 0.5 tanh(1/4); times T^2 = 4:
    # 2 tanh(1/4) = 0.48983732480741843
    assert memory_contrast_kd(s, t, q, temperature=1.0, kd_temperature=2.0).item() == pytest.approx(
        0.48983732480741843, rel=1e-12
    )


def test_memory_contrast_kd_gradcheck_and_empty() -> None:
    s = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t, q = torch.randn(5, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: memory_contrast_kd(x, t, q, temperature=0.5), (s,))
    empty = torch.zeros(0, 3, requires_grad=True)
    value = memory_contrast_kd(empty, empty.detach(), q.float())
    assert value.item() == 0.0 and value.requires_grad


# ---------------------------------------------------------------- queues


def test_rank_within_group() -> None:
    assert rank_within_group(torch.tensor([2, 0, 2, 2, 0, 1])).tolist() == [0, 0, 1, 2, 1, 0]


def test_class_queue_ring_buffer_wraps_around() -> None:
    q = ClassQueue(num_classes=2, size=4, dim=1)
    v = torch.arange(1.0, 11.0)[:, None]  # values 1..10
    q.push(v[:3], torch.tensor([0, 0, 0]))
    q.push(
        v[3:6], torch.tensor([0, 1, 0])
    )  # class 0 gets 4 -> slot 3, 6 -> slot 0 (wrap); class 1: 5 -> slot 0
    assert q.ptr.tolist() == [1, 1]
    assert q.queue[0, :, 0].tolist() == [6.0, 2.0, 3.0, 4.0]
    assert q.queue[1, 0, 0].item() == 5.0
    # more entries than slots at once: only the last `size` survive, still in ring order
    q.push(v[4:10], torch.zeros(6, dtype=torch.long))  # 5..10 from ptr 1 -> slots 1,2,3,0,1,2
    assert q.queue[0, :, 0].tolist() == [8.0, 9.0, 10.0, 7.0]
    assert q.ptr.tolist() == [3, 1]


def test_class_queue_sample_same_slots_every_class() -> None:
    q = ClassQueue(num_classes=3, size=10, dim=2)
    q.queue.copy_(torch.arange(30.0)[:, None].repeat(1, 2).view(3, 10, 2))
    s = q.sample(4, torch.Generator().manual_seed(1))
    assert s.shape == (12, 2)
    slots = s[:, 0].view(3, 4) - torch.tensor([[0.0], [10.0], [20.0]])
    assert torch.equal(slots[0], slots[1]) and torch.equal(slots[1], slots[2])
    assert len(set(slots[0].tolist())) == 4


# ---------------------------------------------------------------- memory modules


def _spec() -> DistillSpec:
    return DistillSpec(num_classes=3, student_feat_channels=4, teacher_feat_channels=5)


def _memory_losses(spec: DistillSpec, **options):
    opts = dict(pixel_memory_size=50, region_memory_size=8, pixel_contrast_size=12, region_contrast_size=6)
    opts.update(options)
    return LOSSES.build("cirkd_memory_p2p", spec=spec, **opts), LOSSES.build(
        "cirkd_memory_p2r", spec=spec, **opts
    )


def _step_inputs(seed: int, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    fs = torch.randn(batch, 4, 4, 4, generator=g, requires_grad=True)
    ft = torch.randn(batch, 5, 4, 4, generator=g, requires_grad=True)
    labels = torch.randint(0, 4, (batch, 16, 16), generator=g)
    labels[labels == 3] = 255
    return fs, ft, DistillBatch(images=torch.zeros(batch, 3, 16, 16), labels=labels)


def test_memory_enqueue_regions_and_pixels_by_hand() -> None:
    spec = _spec()
    p2p, p2r = _memory_losses(spec, pixels_per_update=1)
    mem = p2p.shared_memory
    t = torch.tensor([[3.0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0], [0, 0, 1.0, 0, 0], [1.0, 1, 1, 1, 1]])
    t = t.T.reshape(1, 5, 2, 2)  # pixels in row-major order
    labels = torch.tensor([[[0, 0], [1, 255]]])
    mem.enqueue(F.normalize(t, dim=1), labels, torch.Generator().manual_seed(0))
    # region of class 0: mean of e1 and e2 = (0.5, 0.5, 0...) renormalised
    assert torch.allclose(mem.region_queue.queue[0, 0], torch.tensor([0.7071068, 0.7071068, 0, 0, 0]))
    assert torch.allclose(mem.region_queue.queue[1, 0], torch.tensor([0.0, 0, 1, 0, 0]))
    assert mem.region_queue.ptr.tolist() == [1, 1, 0] and mem.pixel_queue.ptr.tolist() == [1, 1, 0]
    picked = mem.pixel_queue.queue[0, 0]
    assert torch.equal(picked, torch.tensor([1.0, 0, 0, 0, 0])) or torch.equal(
        picked, torch.tensor([0.0, 1, 0, 0, 0])
    )
    assert torch.equal(mem.pixel_queue.queue[1, 0], torch.tensor([0.0, 0, 1, 0, 0]))


def test_memory_pixels_per_update_caps_entries() -> None:
    spec = DistillSpec(num_classes=2, student_feat_channels=4, teacher_feat_channels=5)
    p2p = LOSSES.build("cirkd_memory_p2p", spec=spec, pixel_memory_size=100)
    labels = torch.zeros(3, 8, 8, dtype=torch.long)
    labels[1] = 1
    labels[2, :, :1] = 1  # image 2: 56 pixels of class 0, 8 of class 1
    p2p.shared_memory.enqueue(F.normalize(torch.randn(3, 5, 8, 8), dim=1), labels, torch.Generator())
    assert p2p.shared_memory.pixel_queue.ptr.tolist() == [16 + 16, 16 + 8]


def test_memory_terms_share_projector_queues_and_enqueue_once() -> None:
    spec = _spec()
    p2p, p2r = _memory_losses(spec)
    assert p2p.shared_memory is p2r.shared_memory
    assert list(spec.shared.modules) == ["cirkd_memory"]  # owned by the distiller, named
    assert len(list(p2r.parameters())) == 0 and len(list(p2p.parameters())) == 0  # the terms hold references
    projector = list(spec.shared.modules.parameters())
    assert len(projector) == 4  # conv, BN weight+bias, conv
    fs, ft, batch = _step_inputs(0)
    total = p2p(out(fs), out(ft), batch) + p2r(out(fs), out(ft), batch)
    assert p2p.shared_memory.step.item() == 1  # one enqueue for both terms (batch.memo)
    total.backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector)
    assert ft.grad is None
    assert total.item() > 0
    other_p2p, _ = _memory_losses(_spec())  # another spec (another run): its own memory
    assert other_p2p.shared_memory is not p2p.shared_memory


def test_memory_loss_equals_functional_on_its_contrast_set() -> None:
    spec = _spec()
    p2p = LOSSES.build(
        "cirkd_memory_p2p", spec=spec, pixel_memory_size=50, pixel_contrast_size=12, share=False
    )
    p2p.eval()  # no enqueue, BN running stats: everything reproducible by hand
    fs, ft, batch = _step_inputs(1)
    value = p2p(out(fs), out(ft), batch)
    mem = p2p.shared_memory
    contrast = mem.pixel_queue.sample(12 // 3 + 1, mem._generator(fs.device))
    s = F.normalize(mem.projector(fs), dim=1).permute(0, 2, 3, 1).reshape(-1, 5)
    t = F.normalize(ft, dim=1).permute(0, 2, 3, 1).reshape(-1, 5)
    lab = F.interpolate(batch.labels[:, None].float(), size=(4, 4), mode="nearest").flatten().long()
    keep = lab != 255
    assert contrast.shape == (15, 5)
    expected = memory_contrast_kd(s[keep], t[keep], contrast)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert mem.step.item() == 0 and mem.pixel_queue.ptr.sum().item() == 0


def test_memory_state_dict_round_trip() -> None:
    spec = _spec()
    p2p, p2r = _memory_losses(spec)
    for seed in range(3):
        fs, ft, batch = _step_inputs(seed)
        p2p(out(fs), out(ft), batch)
        p2r(out(fs), out(ft), batch)
    state = {k: v.clone() for k, v in spec.shared.modules.state_dict().items()}
    assert state["cirkd_memory.step"].item() == 3 and state["cirkd_memory.region_queue.ptr"].sum() > 0
    new_spec = _spec()
    new_p2p, new_p2r = _memory_losses(new_spec)
    new_spec.shared.modules.load_state_dict(state)
    for key, value in new_spec.shared.modules.state_dict().items():
        assert torch.equal(value, state[key]), key
    fs, ft, batch = _step_inputs(7)  # same next step -> same queues (seeded by the restored step)
    for losses in ((p2p, p2r), (new_p2p, new_p2r)):
        for loss in losses:
            loss(out(fs), out(ft.detach()), batch)
    assert torch.equal(p2p.shared_memory.pixel_queue.queue, new_p2p.shared_memory.pixel_queue.queue)


def test_single_memory_term_allocates_only_its_queue() -> None:
    p2r = LOSSES.build("cirkd_memory_p2r", spec=_spec(), region_memory_size=8)
    assert p2r.shared_memory.pixel_queue is None
    assert p2r.shared_memory.region_queue.queue.shape == (3, 8, 5)


def test_memory_enqueue_reference_positions_and_pointer_reset_by_hand() -> None:
    """``enqueue: reference`` reproduces CIRKD's pixel enqueue: ``randperm(n)`` of the class's pixel count
    indexes the image's positions (raster order), and a write reaching the end of the buffer fills the
    last k slots and resets the pointer; segkd's default takes the class's own pixels and wraps."""
    spec = DistillSpec(num_classes=2, student_feat_channels=4, teacher_feat_channels=4)
    t = torch.eye(4).reshape(1, 4, 1, 4)  # position p holds e_p
    labels = torch.tensor([[[1, 0, 1, 1]]])  # class 0: position 1 only; class 1: positions 0, 2, 3
    entries = {}
    for mode in ("reference", "segkd"):
        p2p = LOSSES.build("cirkd_memory_p2p", spec=spec, pixel_memory_size=4, enqueue=mode)
        mem = p2p.shared_memory
        mem.enqueue(t, labels, torch.Generator().manual_seed(0))
        entries[mode] = mem.pixel_queue.queue.clone(), mem.pixel_queue.ptr.tolist()
        if mode == "reference":
            first = mem.pixel_queue.queue[1, 0].clone()
            mem.enqueue(t, labels, torch.Generator().manual_seed(1))
            # class 1 again: ptr 3 + k 3 >= 4 -> last 3 slots rewritten, pointer back to 0, slot 0 kept
            assert mem.pixel_queue.ptr.tolist() == [2, 0]
            assert torch.equal(mem.pixel_queue.queue[1, 0], first)
            rows = {tuple(r.tolist()) for r in mem.pixel_queue.queue[1, 1:]}
            assert rows == {tuple(torch.eye(4)[p].tolist()) for p in (0, 1, 2)}
    queue, ptr = entries["reference"]
    assert ptr == [1, 3]
    assert torch.equal(queue[0, 0], torch.eye(4)[0])  # class 0 (n = 1): image position 0 (a class-1 pixel)
    assert {tuple(r.tolist()) for r in queue[1, :3]} == {tuple(torch.eye(4)[p].tolist()) for p in (0, 1, 2)}
    queue, ptr = entries["segkd"]
    assert ptr == [1, 3]
    assert torch.equal(queue[0, 0], torch.eye(4)[1])  # class 0's own pixel
    assert {tuple(r.tolist()) for r in queue[1, :3]} == {tuple(torch.eye(4)[p].tolist()) for p in (0, 2, 3)}
    with pytest.raises(ValueError, match="enqueue"):
        LOSSES.build("cirkd_memory_p2p", spec=spec, enqueue="fifo")


def test_class_queue_reference_block_write() -> None:
    q = ClassQueue(1, 5, 2)
    q.push_block_reference(torch.ones(2, 2), 0)
    assert q.ptr.tolist() == [2] and torch.equal(q.queue[0, :2], torch.ones(2, 2))
    q.push_block_reference(torch.full((3, 2), 2.0), 0)  # 2 + 3 >= 5: last 3 slots, pointer reset
    assert q.ptr.tolist() == [0] and torch.equal(q.queue[0, 2:], torch.full((3, 2), 2.0))
    q.push_block_reference(torch.full((1, 2), 3.0), 0)
    assert q.ptr.tolist() == [1] and torch.equal(q.queue[0, 0], torch.full((2,), 3.0))


def test_batch_p2p_matmul_dtype_option() -> None:
    from segkd.losses import DistillSpec, build_loss

    spec = DistillSpec(num_classes=3, student_feat_channels=4, teacher_feat_channels=6)
    with pytest.raises(ValueError, match="matmul_dtype"):
        build_loss("cirkd_batch_p2p", spec, matmul_dtype="int8")
    loss = build_loss("cirkd_batch_p2p", spec, matmul_dtype="bfloat16")
    assert loss.matmul_dtype is torch.bfloat16
