"""``segkd bench loss``: one loss's forward+backward time and peak memory as the feature map grows.

For each (batch, h, w): random student/teacher outputs (feat, logits at h x w; images and labels at the
8x input size), the registered loss (its default options) timed over ``iters`` forward+backward passes,
its peak memory measured once (:mod:`segkd.bench.memory`), and, for losses with a naive reference in
:mod:`segkd.bench.naive`, the same for the all-at-once computation plus the value and gradient gaps.
Timings are interleaved: each of ``iters`` rounds runs every case once (median, min and max reported).
A naive run whose largest matrix alone would exceed ``naive_max_gib`` is skipped with the estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from segkd.bench.memory import measure_peak, settle_allocator
from segkd.bench.naive import NAIVE, naive_bytes
from segkd.bench.timing import summarise, time_calls
from segkd.models.outputs import SegOutput


@dataclass
class LossCase:
    impl: str
    batch: int
    h: int
    w: int
    median_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    peak_mib: float | None = None
    value: float | None = None
    note: str = ""


def make_inputs(batch: int, h: int, w: int, channels: tuple[int, int], num_classes: int, stride: int = 8,
                seed: int = 0):
    """(student SegOutput with grad-requiring feat/logits, teacher SegOutput, DistillBatch)."""
    from segkd.losses import DistillBatch

    g = torch.Generator().manual_seed(seed)
    feat_s = torch.randn(batch, channels[0], h, w, generator=g).requires_grad_()
    logits_s = torch.randn(batch, num_classes, h, w, generator=g).requires_grad_()
    teacher = SegOutput(logits=torch.randn(batch, num_classes, h, w, generator=g),
                        feat=torch.randn(batch, channels[1], h, w, generator=g))
    images = torch.randn(batch, 3, h * stride, w * stride, generator=g)
    labels = torch.randint(0, num_classes, (batch, h * stride, w * stride), generator=g)
    return SegOutput(logits=logits_s, feat=feat_s), teacher, DistillBatch(images=images, labels=labels)


def _prepare_case(impl: str, fn, size: tuple[int, int, int],
                  leaves: list[torch.Tensor]) -> tuple[LossCase, Callable[[], None], torch.Tensor]:
    """One warm-up forward+backward, then the peak memory of three more, the smallest kept (the
    steady state): the first measurements of a process still see the heap that earlier, unmeasured work
    left behind; seen for ``skd_pairwise`` at 2x64x128 in one process: 13.8, 12.1, 9.1, 9.2, 9.2 MiB.
    Returns (case, step, value)."""
    case = LossCase(impl, *size)
    holder: dict[str, torch.Tensor] = {}

    def step() -> None:
        for leaf in leaves:
            leaf.grad = None
        value = fn()
        value.backward()
        holder["value"] = value.detach()

    step()
    peaks = [measure_peak(step) for _ in range(3)]
    case.peak_mib = None if None in peaks else min(peaks)
    case.value = float(holder["value"])
    return case, step, holder["value"]


def bench_loss(name: str, sizes: list[tuple[int, int, int]], channels: tuple[int, int] = (128, 256),
               num_classes: int = 19, iters: int = 3, naive: bool = True, naive_max_gib: float = 2.0) -> dict:
    """Benchmark ``LOSSES[name]`` (and its naive reference) at every (batch, h, w) of ``sizes``.

    Two phases (see :mod:`segkd.bench.memory`): the peak memory of every case first, then, with the
    allocator settled, the timings.
    """
    from segkd.losses import DistillSpec, build_loss

    spec = DistillSpec(num_classes=num_classes, student_feat_channels=channels[0],
                       teacher_feat_channels=channels[1])
    loss = build_loss(name, spec)
    cases, steps = [], []
    for size in sizes:
        student, teacher, batch = make_inputs(*size, channels, num_classes)
        leaves = [student.feat, student.logits]
        run = lambda s=student, t=teacher, b=batch: loss(s, t, b)  # noqa: E731
        blocked, step, value = _prepare_case(name, run, size, leaves)
        grad = student.feat.grad.clone() if student.feat.grad is not None else None
        cases.append(blocked)
        steps.append((blocked, step))
        if naive and name in NAIVE:
            naive_case, naive_step = _naive_case(name, student, teacher, size, naive_max_gib, value, grad)
            cases.append(naive_case)
            if naive_step is not None:
                steps.append((naive_case, naive_step))
    settle_allocator()
    _time_round_robin(steps, iters)
    return {"loss": name, "channels": list(channels), "num_classes": num_classes, "iters": iters,
            "threads": torch.get_num_threads(), "cases": [asdict(c) for c in cases]}


def _time_round_robin(steps: list[tuple[LossCase, Callable[[], None]]], rounds: int) -> None:
    """Time every case once per round, the cases interleaved, so that a shared machine's load changes
    hit all of them alike; each case gets the median, min and max over the rounds."""
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(rounds):
        for (_, step), acc in zip(steps, times, strict=True):
            acc.extend(time_calls(step, 1, warmup=0))
    for (case, _), acc in zip(steps, times, strict=True):
        case.median_ms = summarise(acc)["median_ms"]
        case.min_ms, case.max_ms = 1e3 * min(acc), 1e3 * max(acc)


def _naive_case(name, student, teacher, size, max_gib, value, grad):
    need = naive_bytes(name, *size) / 2**30
    if need > max_gib:
        note = f"skipped: one pair matrix alone needs {need:.1f} GiB"
        return LossCase(f"{name} (naive)", *size, note=note), None
    run = lambda: NAIVE[name](student.feat, teacher.feat)  # noqa: E731
    case, step, naive_value = _prepare_case(f"{name} (naive)", run, size, [student.feat])
    grad_gap = (student.feat.grad - grad).abs().max().item() if grad is not None else float("nan")
    case.note = f"abs value diff {abs(float(naive_value - value)):.2g}, max abs grad diff {grad_gap:.2g}"
    return case, step


def loss_table(result: dict) -> str:
    """Markdown table of a :func:`bench_loss` result."""
    from segkd.bench.table import markdown_table

    rows = [[c["impl"], f"{c['batch']}x{c['h']}x{c['w']}", c["median_ms"],
             None if c.get("min_ms") is None else f"{c['min_ms']:.0f}-{c['max_ms']:.0f}", c["peak_mib"],
             None if c["value"] is None else f"{c['value']:.6g}", c["note"]] for c in result["cases"]]
    head = (f"loss {result['loss']}: forward+backward, channels {result['channels']}, {result['iters']} "
            "interleaved rounds, CPU peak = RSS growth\n\n")
    columns = ["impl", "BxHxW", "median ms", "range ms", "peak MiB", "value", "note"]
    return head + markdown_table(columns, rows)
