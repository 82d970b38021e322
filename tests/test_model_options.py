"""Misspelt ``model.options`` keys get one line naming the key and the valid options, for every model kind."""

from __future__ import annotations

import pytest

from segkd.cli import main as cli_main
from segkd.config_schema import ModelConfig
from segkd.models import build_model, build_model_from_config
from segkd.registry import RegistryError


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("test_tiny_student", "channels, depth, kernel_sizes, stem_channels"),
        ("demo_student", "channels, depth, kernel_sizes, stem_channels"),
        ("pspnet_resnet18", "bins, timm_kwargs"),
        ("deeplabv3_mobilenetv2", "rates, timm_kwargs"),
        ("fcn_resnet18", "timm_kwargs"),
        ("pspnet_resnet10t", "bins, timm_kwargs"),  # the <head>_<timm name> pattern
    ],
)
def test_misspelt_option_names_key_and_valid_options(name: str, valid: str):
    cfg = ModelConfig(name=name, options={"channelz": 8})
    with pytest.raises(RegistryError) as info:
        build_model_from_config(cfg, 3)
    assert str(info.value) == (
        f"model '{name}': unknown option 'channelz' in model.options. Valid options: {valid}"
    )


def test_valid_options_still_reach_backbone_and_head():
    tiny = build_model("test_tiny_student", 3, channels=(4, 4, 8, 8), stem_channels=4)
    assert tiny.stage_channels == [4, 4, 8, 8]
    psp = build_model("pspnet_resnet10t", 3, bins=(1, 2))
    assert len(psp.head.psp.stages) == 2


def test_misspelt_timm_kwargs_names_the_key():
    message = r"timm model 'resnet10t' rejects .*model\.options\.timm_kwargs.*'foo'"
    with pytest.raises(ValueError, match=message):
        build_model("fcn_resnet10t", 3, timm_kwargs={"foo": 1})


def test_option_that_is_a_model_key_points_to_that_key():
    with pytest.raises(ValueError, match=r"model\.options\.aux: set model\.aux instead"):
        build_model_from_config(ModelConfig(name="test_tiny_student", options={"aux": False}), 3)


def test_cli_prints_one_line_without_traceback(tmp_path, capsys: pytest.CaptureFixture):
    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\n"
                      "model: {name: demo_student, options: {channelz: 8}}\n"
                      "data: {name: synthetic, workers: 0, options: {num_samples: 4, image_size: 32}}\n"
                      "train: {device: cpu, iters: 1}\n")
    rc = cli_main(["train", str(config)])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    assert "model 'demo_student': unknown option 'channelz' in model.options" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
