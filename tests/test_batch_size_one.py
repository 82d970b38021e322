"""Batch size 1 with a pooling head: a clear error naming data.batch_size before training, not PyTorch's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from _engine_helpers import tiny_config
from segkd.engine import train
from segkd.models import build_model
from segkd.models.batchnorm import BatchSizeError, check_batch_size, pooled_batch_norms
from segkd.models.heads import DeepLabV3Head, FCNHead, PSPHead


def test_pooled_batch_norms_are_the_image_pooling_branches():
    assert [n for n, _ in pooled_batch_norms(DeepLabV3Head(8, 3, 4, rates=(1,)))] == ["aspp.pool.conv.1"]
    assert [n for n, _ in pooled_batch_norms(PSPHead(8, 3, 4))] == ["psp.stages.0.2"]  # bin 1 only
    assert list(pooled_batch_norms(PSPHead(8, 3, 4, bins=(2, 3)))) == []
    assert list(pooled_batch_norms(FCNHead(8, 3))) == []


@pytest.mark.parametrize("name", ["test_tiny_student", "test_tiny_teacher"])  # PSPNet, DeepLabV3
def test_batch_of_one_is_refused_naming_the_setting(name: str):
    model = build_model(name, 3).train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model(torch.randn(1, 3, 32, 32))  # what the check prevents
    with pytest.raises(BatchSizeError, match=rf"data\.batch_size=1 .*'{name}'.*set data\.batch_size >= 2"):
        check_batch_size(model, 1)
    check_batch_size(model, 2)
    model(torch.randn(2, 3, 32, 32))


def test_head_without_image_pooling_trains_with_batch_one():
    model = build_model("demo_student", 3).train()  # FCN head
    check_batch_size(model, 1)
    model(torch.randn(1, 3, 32, 32)).logits.sum().backward()


def test_sync_batch_norm_over_two_processes_is_accepted():
    """The reference's way: SyncBatchNorm statistics over >= 2 processes (1 image each) are defined."""
    model = nn.SyncBatchNorm.convert_sync_batchnorm(build_model("test_tiny_student", 3))
    check_batch_size(model, 1, world_size=2)
    with pytest.raises(BatchSizeError):
        check_batch_size(model, 1, world_size=1)


def test_train_stops_before_the_first_step(tmp_path: Path):
    cfg = tiny_config(tmp_path / "run", iters=2, data__batch_size=1)
    with pytest.raises(BatchSizeError, match=r"data\.batch_size"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "log.jsonl").exists()
