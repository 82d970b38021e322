"""``segkd bench infer``: latency and throughput of a student's inference graph per runtime.

Runtimes: PyTorch eager (``inference_mode``), PyTorch ``torch.compile`` (failures are caught and reported
as ``n/a`` with the reason), ONNX Runtime (graph exported by :mod:`segkd.export`, all optimisations).
Every runtime times the same :class:`~segkd.export.graph.InferenceGraph` (logits upsampled to the input
size) on the same random input, on CPU and, where present, on CUDA. PyTorch and ONNX Runtime use the same
number of CPU threads.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from segkd.bench.timing import summarise, time_calls


@dataclass
class InferResult:
    runtime: str
    device: str
    median_ms: float | None = None
    p90_ms: float | None = None
    throughput: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def build_student(model: str, num_classes: int) -> tuple[torch.nn.Module, str]:
    """A registered model name (random init) or a checkpoint / run directory (trained weights)."""
    path = Path(model)
    if path.exists():
        from segkd.export.loading import load_student

        student, meta = load_student(path)
        return student, meta.model_name
    from segkd.models import build_model

    return build_model(model, num_classes, pretrained=False, aux=False).eval(), model


def _timed(name: str, device: str, fn, iters: int, warmup: int, batch: int) -> InferResult:
    try:
        stats = summarise(time_calls(fn, iters, warmup, device), batch)
    except Exception as err:  # noqa: BLE001 - a runtime that fails is reported, not fatal
        return InferResult(name, device, note=f"n/a: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
    return InferResult(name, device, stats["median_ms"], stats["p90_ms"], stats["throughput"])


def _torch_results(graph, x, device, iters, warmup, compile_model) -> list[InferResult]:
    graph, x = graph.to(device), x.to(device)
    results = []
    with torch.inference_mode():
        results.append(_timed("pytorch-eager", device, lambda: graph(x), iters, warmup, x.shape[0]))
    if compile_model:
        try:
            compiled = torch.compile(graph)
        except Exception as err:  # noqa: BLE001
            results.append(InferResult("pytorch-compile", device, note=f"n/a: {type(err).__name__}: {err}"))
        else:
            with torch.inference_mode():
                results.append(_timed("pytorch-compile", device, lambda: compiled(x), iters, warmup + 1,
                                      x.shape[0]))
    return results


def _ort_results(onnx_path: Path, x: np.ndarray, devices: list[str], iters: int, warmup: int,
                 threads: int) -> list[InferResult]:
    import onnxruntime as ort

    from segkd.export.runners import onnx_runner, onnx_session

    results = []
    for device in devices:
        provider = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
        if provider not in ort.get_available_providers():
            note = f"n/a: {provider} not in this onnxruntime"
            results.append(InferResult("onnxruntime", device, note=note))
            continue
        run = onnx_runner(onnx_session(onnx_path, threads, [provider]))
        results.append(_timed("onnxruntime", device, lambda run=run: run(x), iters, warmup, x.shape[0]))
    return results


def bench_infer(model: str, size: tuple[int, int], num_classes: int = 19, batch: int = 1, iters: int = 20,
                warmup: int = 3, devices: list[str] | None = None, compile_model: bool = True,
                threads: int | None = None) -> dict:
    """Time every runtime; returns a JSON-ready dict with settings and one row per (runtime, device)."""
    from segkd.export import InferenceGraph, ModelMeta
    from segkd.export.onnx_export import export_onnx

    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    student, name = build_student(model, num_classes)
    graph = InferenceGraph(student).eval()
    x = torch.randn(batch, 3, *size)
    results: list[InferResult] = []
    for device in devices:
        results += _torch_results(graph, x, device, iters, warmup, compile_model)
    graph = graph.cpu()
    k = getattr(student, "num_classes", num_classes)
    meta = ModelMeta(name, k, [f"class_{i}" for i in range(k)], [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, _ = export_onnx(graph, x[:1].clone(), Path(tmp) / "model.onnx", meta, dynamic=batch != 1)
        results += _ort_results(onnx_path, x.numpy(), devices, iters, warmup, threads)
    return {"model": name, "size": list(size), "batch": batch, "threads": threads, "iters": iters,
            "torch": torch.__version__, "results": [asdict(r) for r in results]}


def infer_table(result: dict) -> str:
    """Markdown table of a :func:`bench_infer` result, with the speed-up over eager on the same device."""
    from segkd.bench.table import markdown_table

    eager = {r["device"]: r["median_ms"] for r in result["results"] if r["runtime"] == "pytorch-eager"}
    rows = []
    for r in result["results"]:
        base = eager.get(r["device"])
        speedup = base / r["median_ms"] if base and r["median_ms"] else None
        rows.append([r["runtime"], r["device"], r["median_ms"], r["p90_ms"], r["throughput"], speedup,
                     r["note"]])
    head = (f"{result['model']} @ {result['size'][0]}x{result['size'][1]}, batch {result['batch']}, "
            f"{result['threads']} CPU threads, {result['iters']} timed iterations\n\n")
    headers = ["runtime", "device", "median ms", "p90 ms", "img/s", "x eager", "note"]
    return head + markdown_table(headers, rows)


def bench_onnx_files(paths: list[str], iters: int = 50, warmup: int = 5, rounds: int = 5,
                     threads: int | None = None, seed: int = 0) -> dict:
    """Latency of exported ONNX files (e.g. float and INT8) timed in interleaved rounds in one process.

    Every round times each file ``iters`` times (after ``warmup`` calls) on the same random input at the
    files' common fixed size; the ratio median(first file) / median(file) is taken per round, so a
    shared, noisy machine shifts numerator and denominator alike. Reported per file: the median of the
    round medians, and the min / median / max over rounds of the ratio (the spread).
    """
    from segkd.export.runners import _onnx_fixed_size, onnx_runner, onnx_session

    threads = threads or torch.get_num_threads()
    sessions = [onnx_session(p, threads) for p in paths]
    sizes = {_onnx_fixed_size(s) for s in sessions}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"bench infer: the ONNX files must share one fixed input size, got {sorted(map(str, sizes))}")
    (size,) = sizes
    x = np.random.default_rng(seed).standard_normal((1, 3, *size), dtype=np.float32)
    runs = [onnx_runner(s) for s in sessions]
    medians: list[list[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for i, run in enumerate(runs):
            times = time_calls(lambda run=run: run(x), iters, warmup)
            medians[i].append(summarise(times)["median_ms"])
    rows = []
    for path, meds in zip(paths, medians):
        ratios = [a / b for a, b in zip(medians[0], meds)]
        rows.append({"file": str(path), "median_ms": float(np.median(meds)), "round_medians_ms": meds,
                     "speedup_median": float(np.median(ratios)), "speedup_min": min(ratios),
                     "speedup_max": max(ratios)})
    return {"size": list(size), "threads": threads, "iters": iters, "rounds": rounds, "files": rows}


def onnx_files_table(result: dict) -> str:
    """Markdown table of :func:`bench_onnx_files`: latency and speed-up over the first file per round."""
    from segkd.bench.table import markdown_table

    head = (f"ONNX Runtime (CPU) @ {result['size'][0]}x{result['size'][1]}, batch 1, {result['threads']} "
            f"threads, {result['rounds']} interleaved rounds x {result['iters']} timed calls\n\n")
    rows = [[r["file"], r["median_ms"], min(r["round_medians_ms"]), max(r["round_medians_ms"]),
             r["speedup_median"], r["speedup_min"], r["speedup_max"]] for r in result["files"]]
    headers = ["file", "median ms", "min round ms", "max round ms", "x first (median)", "x min", "x max"]
    return head + markdown_table(headers, rows)
