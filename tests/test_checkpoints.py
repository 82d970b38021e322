"""Checkpoint loading: the reference CIRKD layouts (every key and shape) and segkd checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segkd.models import build_model, load_segmentor_checkpoint
from segkd.models.checkpoints import CheckpointError, cirkd_to_segkd

LAYOUTS = json.loads((Path(__file__).parent / "fixtures" / "reference_checkpoint_layouts.json").read_text())


def random_state(layout: dict[str, list[int]], device: str = "cpu") -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    if device == "meta":
        return {k: torch.empty(s, device="meta") for k, s in layout.items()}
    return {k: (torch.randn(s, generator=gen) if s else torch.tensor(7)) for k, s in layout.items()}


@pytest.mark.parametrize("name", ["deeplabv3_resnet18", "pspnet_resnet18", "deeplabv3_mobilenetv2"])
def test_cirkd_layout_loads_exactly_and_values_land(name: str) -> None:
    model = build_model(name, 19)
    state = random_state(LAYOUTS[name])
    report = load_segmentor_checkpoint(model, state)
    assert report["format"] == "cirkd" and report["skipped_aux"] == []
    mapped = cirkd_to_segkd(state)
    own = model.state_dict()
    assert set(mapped) == set(own)  # every model tensor is written, nothing left over
    for key, value in mapped.items():
        assert torch.equal(own[key], value), key
    # spot checks of the name mapping itself
    assert torch.equal(
        own["head.classifier.weight"], state.get("head.block.4.weight", state.get("head.classifier.weight"))
    )
    if "pretrained.bn3.weight" in state:
        assert torch.equal(own["backbone.bn1.weight"], state["pretrained.bn3.weight"])  # deep stem end
        assert torch.equal(own["aux_head.classifier.weight"], state["auxlayer.block.4.weight"])


def test_cirkd_resnet101_teacher_layout_matches_on_meta() -> None:
    """Key and shape match of the 688-key teacher layout without allocating ResNet-101 weights."""
    with torch.device("meta"):
        model = build_model("deeplabv3_resnet101", 19)
    state = random_state(LAYOUTS["deeplabv3_resnet101"], device="meta")
    assert load_segmentor_checkpoint(model, state)["format"] == "cirkd"
    assert set(cirkd_to_segkd(state)) == set(model.state_dict())


def test_cirkd_mobilenet_mapping_is_positional() -> None:
    keys = cirkd_to_segkd(
        {
            "pretrained.net.features.17.conv.6.weight": torch.zeros(1),
            "pretrained.net.features.1.conv.3.weight": torch.zeros(1),
            "pretrained.net.features.7.conv.3.weight": torch.zeros(1),
        }
    )
    assert set(keys) == {
        "backbone.blocks.6.0.conv_pwl.weight",
        "backbone.blocks.0.0.conv_pw.weight",
        "backbone.blocks.3.0.conv_dw.weight",
    }


def test_segkd_checkpoint_roundtrip(tmp_path: Path) -> None:
    source = build_model("test_tiny_teacher", 3).eval()
    path = tmp_path / "best.pt"
    torch.save(
        {"model": source.state_dict(), "meta": {"model_name": "test_tiny_teacher", "num_classes": 3}}, path
    )
    target = build_model("test_tiny_teacher", 3).eval()
    assert load_segmentor_checkpoint(target, path)["format"] == "segkd"
    x = torch.randn(1, 3, 40, 40)
    assert torch.allclose(source(x).logits, target(x).logits)


def test_num_classes_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"model": build_model("test_tiny_student", 4).state_dict(), "meta": {"num_classes": 4}}, path)
    with pytest.raises(CheckpointError, match=r"ckpt\.pt.*4 classes.*num_classes=3"):
        load_segmentor_checkpoint(build_model("test_tiny_student", 3), path)
    state = random_state(LAYOUTS["deeplabv3_resnet18"])
    with pytest.raises(CheckpointError, match="19 classes"):
        load_segmentor_checkpoint(build_model("deeplabv3_resnet18", 21), state)


def test_mismatched_keys_are_named() -> None:
    state = build_model("test_tiny_student", 3).state_dict()
    state["head.extra.weight"] = torch.zeros(1)
    del state["head.bottleneck.0.weight"]
    with pytest.raises(CheckpointError, match="head.bottleneck.0.weight.*head.extra.weight"):
        load_segmentor_checkpoint(build_model("test_tiny_student", 3), state)
    with pytest.raises(CheckpointError, match="layout"):
        load_segmentor_checkpoint(build_model("test_tiny_student", 3), {"foo.weight": torch.zeros(1)})


def test_aux_weights_may_be_absent() -> None:
    state = {k: v for k, v in build_model("test_tiny_student", 3).state_dict().items() if "aux_head" not in k}
    with pytest.warns(UserWarning, match="aux"):
        report = load_segmentor_checkpoint(build_model("test_tiny_student", 3), state)
    assert report["skipped_aux"]


def test_local_cirkd_imagenet_backbone_file(tmp_path: Path) -> None:
    """A CIRKD-style resnet18-imagenet.pth (deep-stem keys + fc) loads into the backbone by path."""
    layout = {
        k[len("pretrained.") :]: s
        for k, s in LAYOUTS["deeplabv3_resnet18"].items()
        if k.startswith("pretrained.")
    }
    state = random_state(layout)
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(state, path)
    model = build_model("deeplabv3_resnet18", 3, pretrained=str(path))
    assert torch.equal(model.backbone.conv1[3].weight, state["conv2.weight"])
    assert torch.equal(model.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    with pytest.raises(CheckpointError, match="no key matches"):
        torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pth")
        build_model("deeplabv3_resnet18", 3, pretrained=str(tmp_path / "bad.pth"))
