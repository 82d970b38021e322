"""Exponent notation without a dot (``1e-3``, read by YAML 1.1 as a string) is a number in configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from segkd.config import ConfigError, from_dict, load_config, yaml_load
from segkd.config_schema import ExperimentConfig


def test_yaml_file_accepts_exponent_notation(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "optim: {lr: 1e-3, weight_decay: 5E-4, warmup_ratio: +1e-1}\n"
        "data: {scale_range: [5e-1, 2]}\n"
        "distill:\n  teacher: {name: t}\n  losses: [{name: kd, weight: 1e1, options: {temperature: 4e0}}]\n"
    )
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == "1e-3"  # the YAML 1.1 behaviour being fixed
    cfg = load_config(path)
    assert cfg.optim.lr == 0.001 and cfg.optim.weight_decay == 0.0005 and cfg.optim.warmup_ratio == 0.1
    assert cfg.data.scale_range == [0.5, 2.0]
    assert cfg.distill.losses[0].weight == 10.0
    assert cfg.distill.losses[0].options == {"temperature": 4.0}  # free-form options get a float too


def test_command_line_override_accepts_exponent_notation():
    cfg = load_config(None, ["optim.lr=1e-3", "optim.momentum=9E-1", "data.options.noise=2.5e-2"])
    assert cfg.optim.lr == 0.001 and cfg.optim.momentum == 0.9
    assert cfg.data.options["noise"] == 0.025


def test_numeric_strings_from_python_data_are_accepted_for_float_fields():
    cfg = from_dict(ExperimentConfig, {"optim": {"lr": "1e-3", "momentum": " 0.5 "}})
    assert cfg.optim.lr == 0.001 and cfg.optim.momentum == 0.5


@pytest.mark.parametrize("text", ["fast", "1e-3x", "1e", "e3", "nan", "inf", "0x10", "1_000", ""])
def test_non_numeric_strings_are_still_refused_naming_the_key(text: str):
    with pytest.raises(ConfigError, match=r"config key 'optim\.lr': expected a number, got '"):
        from_dict(ExperimentConfig, {"optim": {"lr": text}})


def test_other_yaml_values_keep_their_types():
    data = yaml_load("a: 10\nb: 1.5\nc: abc\nd: '1e-3'\ne: 1e3\nf: true\ng: [1e-2, x]")
    assert data == {"a": 10, "b": 1.5, "c": "abc", "d": "1e-3", "e": 1000.0, "f": True, "g": [0.01, "x"]}
    assert isinstance(data["a"], int)
