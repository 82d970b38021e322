"""Benchmarks run on tiny sizes and produce well-formed output (they are commands, not timed tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segkd.bench.memory import measure_peak
from segkd.bench.naive import cirkd_batch_p2p_naive, skd_pairwise_naive
from segkd.cli import main
from segkd.losses.functional.cirkd import cross_image_pixel_kd
from segkd.losses.functional.skd import pairwise_affinity_loss


def test_naive_references_equal_blocked_losses():
    s, t = torch.randn(3, 8, 6, 10), torch.randn(3, 12, 6, 10)
    assert skd_pairwise_naive(s, t).item() == pytest.approx(pairwise_affinity_loss(s, t).item(), rel=1e-5)
    assert cirkd_batch_p2p_naive(s, t).item() == pytest.approx(cross_image_pixel_kd(s, t).item(), rel=1e-5)


def test_measure_peak_sees_a_large_allocation():
    peak = measure_peak(lambda: torch.ones(16 * 2**20 // 4).sum())  # 16 MiB
    if peak is None:
        pytest.skip("no /proc/self/clear_refs on this system")
    assert 12 < peak < 64


def test_bench_infer_cli(tmp_path, capsys):
    out = tmp_path / "infer.json"
    assert main(["bench", "infer", "test_tiny_student", "--size", "32x32", "--iters", "2", "--warmup", "1",
                 "--no-compile", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    runtimes = {r["runtime"]: r for r in result["results"]}
    assert set(runtimes) == {"pytorch-eager", "onnxruntime"}
    assert all(r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] for r in runtimes.values())
    assert "| onnxruntime | cpu |" in capsys.readouterr().out


def test_bench_loss_cli_with_naive(tmp_path):
    out = tmp_path / "loss.json"
    assert main(["bench", "loss", "cirkd_batch_p2p", "--sizes", "2x8x8", "--channels", "8", "16",
                 "--iters", "1", "--json", str(out)]) == 0
    cases = json.loads(out.read_text())["cases"]
    assert [c["impl"] for c in cases] == ["cirkd_batch_p2p", "cirkd_batch_p2p (naive)"]
    assert cases[0]["value"] == pytest.approx(cases[1]["value"], rel=1e-5) and cases[0]["median_ms"] > 0
    assert "grad diff" in cases[1]["note"]


def test_bench_distill_cli(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model: {name: test_tiny_student}\ndata: {crop_size: [16, 16], batch_size: 2}\n"
                   "distill: {teacher: {name: test_tiny_teacher}}\n")
    out = tmp_path / "distill.json"
    assert main(["bench", "distill", str(cfg), "--methods", "kd", "cwd", "nope", "--iters", "1",
                 "--json", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["student", "student+teacher", "kd", "cwd", "nope"]
    assert rows["student+teacher"]["ratio"] == 1.0 and rows["kd"]["median_ms"] > 0
    assert rows["nope"]["note"].startswith("n/a: RegistryError")


def test_bench_distill_methods_are_the_recipes_and_run_the_engine_step(tmp_path):
    from segkd.bench.distill import method_bundles

    recipes = method_bundles()
    assert [t["weight"] for t in recipes["skd"]] == [1.0, 10.0, 0.001]  # configs/_base/methods/skd.yaml
    assert recipes["skd"][2]["options"] == {"adv_loss": "hinge", "d_weight": 0.1}  # full-width D
    demo = method_bundles("demo")["cirkd"]
    assert demo[2]["options"]["pixel_memory_size"] == 2000  # the demo's memories, scaled to its data
    assert "pixel_memory_size" not in recipes["cirkd"][2]["options"]  # the recipes' full queues
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model: {name: test_tiny_student}\ndata: {crop_size: [32, 32], batch_size: 2}\n"
                   "distill: {teacher: {name: test_tiny_teacher}}\ntrain: {grad_accum: 2, grad_clip: 1.0}\n")
    out = tmp_path / "skd.json"
    assert main(["bench", "distill", str(cfg), "--methods", "skd", "--iters", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["options"] == "recipes"
    skd = result["rows"][2]
    assert skd["terms"] == ["kd", "skd_pairwise", "skd_holistic"] and skd["median_ms"] > 0, skd["note"]


def test_measure_peak_is_repeatable_and_leaves_a_fast_allocator():
    """A second measurement of the same work sees the same peak (free heap pages are returned first), and
    afterwards glibc's thresholds are the settled ones, not the 64 KiB pin used while measuring."""
    work = lambda: torch.ones(16 * 2**20 // 4).sum()  # noqa: E731 - 16 MiB
    first, second = measure_peak(work), measure_peak(work)
    if first is None:
        pytest.skip("no /proc/self/clear_refs on this system")
    assert 12 < first < 64 and 12 < second < 64


def test_bench_outputs_are_named_by_what_was_measured_and_never_replaced(tmp_path, monkeypatch):
    from segkd.commands.bench import output_path

    monkeypatch.chdir(tmp_path)
    first = output_path("loss", ["skd_pairwise", "2x32x64", "8x64x128"])
    assert first == Path("bench_loss_skd_pairwise_2x32x64_8x64x128.json")
    first.write_text("{}")
    assert output_path("loss", ["skd_pairwise", "2x32x64", "8x64x128"]).name == (
        "bench_loss_skd_pairwise_2x32x64_8x64x128-2.json"
    )
    infer = output_path("infer", ["demo_student", "96x96", "b1"])
    assert infer.name == "bench_infer_demo_student_96x96_b1.json"
    (tmp_path / "mine.json").write_text("{}")
    assert output_path("infer", ["x"], "mine.json") == Path("mine-2.json")


def test_bench_data_reads_generated_cityscapes_layout_and_times_the_step(tmp_path):
    from segkd.bench.data import bench_data, data_table, write_cityscapes_like
    from segkd.config import load_config
    from segkd.data import build_dataset

    root = write_cityscapes_like(tmp_path / "cs", 3, size=(32, 64))
    dataset = build_dataset("cityscapes", str(root), "train")
    assert len(dataset) == 3 and tuple(dataset[0]["label"].shape) == (32, 64)
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(f"model: {{name: test_tiny_student, num_classes: 19}}\n"
                        f"data: {{name: cityscapes, root: {root}, crop_size: [16, 32], batch_size: 2, "
                        f"workers: 1, prefetch_factor: 3}}\n"
                        "distill: {teacher: {name: test_tiny_teacher, num_classes: 19}, "
                        "losses: [{name: kd}]}\n")
    cfg = load_config(str(cfg_path), [])
    result = bench_data(cfg, batches=2, warmup=1)
    assert result["loader"]["images_per_s"] > 0 and result["prefetch_factor"] == 3
    assert result["step"]["terms"] == ["kd"] and result["step"]["steps_per_s"] > 0
    assert 0 <= result["train_loop"]["wait_fraction"] <= 1
    assert "loader alone" in data_table(result)


def test_train_loader_prefetch_and_persistent_workers():
    from segkd.config_schema import DataConfig
    from segkd.data import build_train_loader, build_val_loader

    data = list(range(6))
    loader = build_train_loader(data, DataConfig(batch_size=2, workers=2, prefetch_factor=5), seed=0)
    assert loader.prefetch_factor == 5 and loader.persistent_workers
    val = build_val_loader(data, DataConfig(workers=2))
    assert val.prefetch_factor == 4 and val.persistent_workers
    assert build_train_loader(data, DataConfig(workers=0), seed=0).prefetch_factor is None
