"""Time per operator type of ONNX files with ONNX Runtime's profiler (CPU, all graph optimisations).

``python scripts/ort_op_profile.py FILE.onnx [FILE.int8.onnx ...] [--runs N] [--threads T]`` prints, per
file, the milliseconds per run spent in each operator type (largest first), e.g. to see where INT8 saves
time and which float parts remain (README "INT8"). Profiler JSON files go to a temporary folder.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile

import numpy as np


def op_times(path: str, runs: int = 1, threads: int = 1) -> dict[str, float]:
    """{operator type: ms per run} of ``path`` on a random input of its fixed shape."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        spec = session.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal(spec.shape, dtype=np.float32)
        for _ in range(runs):
            session.run(None, {spec.name: x})
        with open(session.end_profiling()) as f:
            events = json.load(f)
    totals: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            totals[e["args"]["op_name"]] += e["dur"] / runs / 1000.0
    return dict(totals.most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for path in args.files:
        times = op_times(path, args.runs, args.threads)
        print(f"{path}: {sum(times.values()):.1f} ms per run")
        for op, ms in times.items():
            print(f"  {op:<24} {ms:8.2f}")


if __name__ == "__main__":
    main()
