"""Same seed, settings, libraries and thread count: a distilled run repeats bit for bit on one machine
(issue: reproducibility). Memories, sampling, the discriminator and dropout all draw from seeded RNGs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _engine_helpers import tiny_config
from segkd.engine import train
from segkd.engine.checkpoint import load_checkpoint

TERMS = (
    "[{name: kd}, {name: cirkd_batch_p2p},"
    " {name: cirkd_memory_p2p, options: {pixel_memory_size: 64, pixel_contrast_size: 16}},"
    " {name: cirkd_memory_p2r, options: {region_memory_size: 16, region_contrast_size: 8}},"
    " {name: skd_holistic, weight: 0.001}, {name: dist}]"
)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_distilled_run_repeats_exactly(tmp_path: Path, restore_threads: None):
    runs = []
    for name in ("a", "b"):
        cfg = tiny_config(
            tmp_path / name,
            iters=4,
            train__threads=1,
            distill__teacher__name="test_tiny_teacher",
            distill__allow_untrained_teacher="true",
            distill__losses=TERMS,
        )
        runs.append(train(cfg))
    a, b = (load_checkpoint(r / "checkpoints" / "latest.pt") for r in runs)
    for part in ("model", "losses", "shared"):
        flat_a, flat_b = _flatten(a[part]), _flatten(b[part])
        assert flat_a.keys() == flat_b.keys()
        for key, value in flat_a.items():
            assert torch.equal(value, flat_b[key]), (part, key)
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["env"]["threads"] == 1 and summary["env"]["torch"] == torch.__version__


def _flatten(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor):
            out[f"{prefix}{key}"] = value
    return out
