"""Params / MACs counting against the CIRKD benchmark table (REFERENCE section 1)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from segkd.cli import main
from segkd.models import build_model
from segkd.models.profile import count_macs_paper, profile_model

# name: (paper params M, paper GMACs, deploy params M, deploy conv+linear GMACs) at 1024x2048, 19 classes
TABLE = {
    "deeplabv3_resnet101": (61.1, 2371.7, 58.75, 1985.9),
    "deeplabv3_resnet18": (13.6, 572.0, 13.46, 512.6),
    "deeplabv3_mobilenetv2": (3.2, 128.9, 3.23, 106.5),
    "pspnet_resnet18": (12.9, 507.4, 12.77, 483.6),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_benchmark_numbers(name: str) -> None:
    with torch.device("meta"):
        model = build_model(name, 19)
    result = profile_model(model, (1024, 2048))
    params, gmacs, deploy_params, deploy_conv = TABLE[name]
    assert round(result["paper"]["params"] / 1e6, 1) == params
    assert abs(result["paper"]["macs"] / 1e9 - gmacs) <= 0.1
    assert round(result["deploy"]["params"] / 1e6, 2) == deploy_params
    breakdown = result["deploy"]["breakdown"]
    assert abs(breakdown["conv_linear"] / 1e9 - deploy_conv) <= 0.1
    assert result["deploy"]["macs"] > breakdown["conv_linear"] > 0  # norm/activations/pooling counted too


def test_dilation_is_ignored_only_in_paper_convention() -> None:
    conv = nn.Conv2d(3, 2, 3, padding=4, dilation=4, bias=False)
    model = nn.Sequential(conv)
    macs = count_macs_paper(model, (10, 10))
    assert macs == 3 * 2 * 9 * 16 * 16  # (10 + 8 - 3) + 1 = 16, not the true 10
    assert profile_model(model, (10, 10))["deploy"]["breakdown"]["conv_linear"] == 3 * 2 * 9 * 10 * 10


def test_profile_keeps_the_model_usable_and_measures_latency() -> None:
    model = build_model("test_tiny_student", 3)
    result = profile_model(model, (32, 32), latency=True, latency_runs=2)
    assert result["latency"]["median_ms"] > 0
    assert next(model.parameters()).device.type == "cpu"
    assert result["paper"]["params"] > result["deploy"]["params"]  # aux head counted only in (a)


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["profile", "deeplabv3_resnet18", "--size", "1024x2048", "--num-classes", "19", "--json"]) == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert abs(data["paper"]["macs"] / 1e9 - 572.0) <= 0.1
    assert main(["profile", "pspnet_resnet18"]) == 0
    text = capsys.readouterr().out
    assert "MACs" in text and "FLOPs = 2 x MACs" in text and "507.3" in text


def test_cli_bad_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "nope_net"]) == 2
    assert main(["profile", "test_tiny_student", "--size", "axb"]) == 2
    assert "error" in capsys.readouterr().err
