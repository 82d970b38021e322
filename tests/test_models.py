"""Model zoo: shapes, output stride, train/eval outputs, gradients, names."""

from __future__ import annotations

import pytest
import torch

from segkd.config_schema import ModelConfig
from segkd.models import MODELS, Segmentor, SegOutput, build_model, build_model_from_config
from segkd.registry import RegistryError

SMALL = ["test_tiny_teacher", "test_tiny_student", "demo_teacher", "demo_student"]
ZOO = [
    "deeplabv3_resnet18",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenetv2",
    "pspnet_resnet18",
    "pspnet_resnet101",
    "fcn_resnet18",
]


def test_registry_lists_fixed_names() -> None:
    assert set(SMALL + ZOO) <= set(MODELS.names())


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_tiny_forward_shapes_and_stride(name: str, output_stride: int) -> None:
    model = build_model(name, 5, output_stride=output_stride).train()
    out = model(torch.randn(2, 3, 97, 131))
    assert isinstance(out, SegOutput) and isinstance(model, Segmentor)
    h, w = -(-97 // output_stride), -(-131 // output_stride)  # conv arithmetic rounds up on odd sizes
    assert out.logits.shape == (2, 5, h, w)
    assert out.feat.shape == (2, model.feat_channels, h, w)
    assert out.aux_logits is not None and out.aux_logits.shape[:2] == (2, 5)
    assert [s.shape[1] for s in out.stages] == model.stage_channels
    assert model.output_stride == output_stride


def test_tiny_teacher_and_student_differ_in_feat_channels() -> None:
    assert (
        build_model("test_tiny_teacher", 3).feat_channels != build_model("test_tiny_student", 3).feat_channels
    )


@pytest.mark.parametrize("name", SMALL)
def test_aux_only_in_training_and_gradients_flow(name: str) -> None:
    model = build_model(name, 4)
    out = model.train()(torch.randn(2, 3, 64, 64))
    (out.logits.mean() + out.aux_logits.mean()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert model.eval()(torch.randn(1, 3, 64, 64)).aux_logits is None
    no_aux = build_model(name, 4, aux=False)
    assert no_aux.aux_head is None and no_aux.train()(torch.randn(2, 3, 32, 32)).aux_logits is None


@pytest.mark.parametrize("name", ZOO)
def test_zoo_shapes_on_meta(name: str) -> None:
    """Every benchmark network builds and runs (shapes only, on the meta device: no compute, no memory)."""
    with torch.device("meta"):
        model = build_model(name, 19)
    out = model.train()(torch.empty(2, 3, 97, 131, device="meta"))
    assert out.logits.shape == (2, 19, 13, 17)
    assert (out.aux_logits is None) == (name == "deeplabv3_mobilenetv2")
    widths = {
        "deeplabv3_resnet101": 256,
        "deeplabv3_resnet18": 128,
        "deeplabv3_mobilenetv2": 128,
        "pspnet_resnet18": 128,
        "pspnet_resnet101": 512,
    }
    if name in widths:
        assert model.feat_channels == widths[name]
    assert model.eval()(torch.empty(1, 3, 64, 64, device="meta")).aux_logits is None


def test_resnet18_real_forward_and_deep_stem() -> None:
    model = build_model("deeplabv3_resnet18", 3, output_stride=16).train()
    assert model.backbone.layer1[0].conv1.in_channels == 128  # deep stem 64-64-128
    out = model(torch.randn(2, 3, 33, 34))
    assert out.logits.shape == (2, 3, 3, 3)
    out.logits.sum().backward()
    assert model.backbone.conv1[0].weight.grad is not None


def test_timm_prefix_pattern_and_head_channels() -> None:
    with torch.device("meta"):
        model = build_model("pspnet_resnet34", 7, head_channels=64, output_stride=16)
    assert model.feat_channels == 64
    assert model.eval()(torch.empty(1, 3, 64, 64, device="meta")).logits.shape == (1, 7, 4, 4)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(RegistryError, match="deeplabv3_resnet18.*deeplabv3_<timm model name>"):
        build_model("deeplabv3_not_a_net", 3)
    with pytest.raises(RegistryError, match="test_tiny_teacher"):
        build_model("unet_whatever", 3)


def test_build_from_config_checks_num_classes() -> None:
    model = build_model_from_config(ModelConfig(name="test_tiny_student", head_channels=8), 6)
    assert model.num_classes == 6 and model.feat_channels == 8
    with pytest.raises(ValueError, match="disagrees"):
        build_model_from_config(ModelConfig(name="test_tiny_student", num_classes=5), 6)


def test_pretrained_true_without_hub_weights_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="local file"):
        build_model("deeplabv3_resnet18", 19, pretrained=True)
