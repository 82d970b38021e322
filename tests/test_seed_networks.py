"""The seed papers' own networks: DeepLabV3+ (KA teachers), the KA MobileNetV2 student, ESPNet-C / ESPNet and
MobileNetV2Plus (SKD students): named outputs at the right strides, a CPU training step, ONNX parity, the
authors' parameter counts and key-exact loading of state dicts in the authors' layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segkd.export import ModelMeta, export_model
from segkd.models import MODELS, SegOutput, build_model, load_segmentor_checkpoint
from segkd.models.checkpoints import CheckpointError
from segkd.models.multistage import MultiStageSegmentor

LAYOUTS = json.loads((Path(__file__).parent / "fixtures" / "authors_checkpoint_layouts.json").read_text())

# name, build options, input (H, W), logits stride, feat stride, stage channels
NETWORKS = {
    "espnet_c": ({}, 8, 8, [19, 131, 256]),
    "espnet": ({}, 1, 8, [19, 131, 256]),
    "espnet_released": ({"skip": "level1"}, 1, 8, [16, 19, 131, 256]),
    "mobilenetv2plus": ({}, 4, 4, [16, 24, 32, 64, 96, 160, 320]),
    "linear_mobilenetv2": ({"output_stride": 16}, 16, 16, [24, 32, 96, 320]),
    "deeplabv3plus_resnet18": ({"output_stride": 16}, 4, 4, [64, 128, 256, 512]),
    "deeplabv3plus_resnet50": ({"output_stride": 16}, 4, 4, [256, 512, 1024, 2048]),
    "deeplabv3plus_xception41": ({"output_stride": 16}, 4, 4, [256, 728, 1024, 2048]),
}
ONNX_NETWORKS = [
    "espnet_c", "espnet", "mobilenetv2plus", "linear_mobilenetv2", "deeplabv3plus_resnet18",
    "deeplabv3plus_resnet50", "deeplabv3plus_xception41",  # the KA teachers: every new network exports
]  # fmt: skip


def _build(key: str, num_classes: int = 5) -> torch.nn.Module:
    options, *_ = NETWORKS[key]
    name = "espnet" if key == "espnet_released" else key
    return build_model(name, num_classes, **options)


def test_named_models_are_registered() -> None:
    names = {
        "deeplabv3plus_resnet50",
        "deeplabv3plus_xception41",
        "linear_mobilenetv2",
        "espnet_c",
        "espnet",
        "mobilenetv2plus",
    }
    assert names <= set(MODELS.names())


@pytest.mark.parametrize("key", sorted(NETWORKS))
def test_named_outputs_and_strides(key: str) -> None:
    _, logit_stride, feat_stride, channels = NETWORKS[key]
    model = _build(key).train()
    out = model(torch.randn(2, 3, 64, 96))
    assert isinstance(out, SegOutput)
    assert isinstance(model, MultiStageSegmentor) == (key != "linear_mobilenetv2")
    assert out.logits.shape == (2, 5, 64 // logit_stride, 96 // logit_stride)
    assert model.output_stride == logit_stride
    assert out.feat.shape == (2, model.feat_channels, 64 // feat_stride, 96 // feat_stride)
    assert [s.shape[1] for s in out.stages] == channels == model.stage_channels
    assert out.aux_logits is None  # none of these networks has an auxiliary head


@pytest.mark.parametrize("name", ["deeplabv3plus_resnet50", "deeplabv3plus_xception41"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_ka_teachers_on_meta(name: str, output_stride: int) -> None:
    with torch.device("meta"):
        model = build_model(name, 21, output_stride=output_stride)
    out = model.eval()(torch.empty(1, 3, 128, 160, device="meta"))
    assert out.logits.shape == (1, 21, 32, 40) and out.feat.shape == (1, 256, 32, 40)
    assert [s.shape[-1] for s in out.stages] == [40, 20, 160 // output_stride, 160 // output_stride]
    assert model.stage_channels[0] == 256  # ResNet layer1 / Xception entry-flow block 2: the stride-4 feature
    rates = [conv[0].dilation[0] for conv in model.head.aspp.convs[1:]]
    assert rates == ([12, 24, 36] if output_stride == 8 else [6, 12, 18])


def test_deeplabv3plus_decoder_reads_the_stride4_stage() -> None:
    torch.manual_seed(0)
    model = _build("deeplabv3plus_resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    stages = model.backbone(x)
    changed = [s.clone() for s in stages]
    changed[0] = changed[0] + 1.0  # a different low-level feature must change the prediction
    with torch.no_grad():
        a, _ = model.head(stages)
        b, _ = model.head(changed)
    assert (a - b).abs().max() > 1e-3
    assert model.head.low_level[0].out_channels == 48
    assert model.head.fuse[0].kernel_size == model.head.bottleneck[0].kernel_size == (3, 3)


def test_deeplabv3plus_pattern_and_bad_backbone() -> None:
    with torch.device("meta"):
        model = build_model("deeplabv3plus_resnet34", 3, output_stride=16)
    assert model.name == "deeplabv3plus_resnet34" and model.output_stride == 4
    with pytest.raises(ValueError, match="stride-4"), torch.device("meta"):
        build_model("deeplabv3plus_vit_tiny_patch16_224", 3, output_stride=32)


@pytest.mark.parametrize("key", sorted(NETWORKS))
def test_training_step_on_cpu(key: str) -> None:
    torch.manual_seed(0)
    model = _build(key, 6).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 6, (2, 64, 64))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(images)
    logits = torch.nn.functional.interpolate(out.logits, size=(64, 64), mode="bilinear", align_corners=False)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    moving = {n for n, p in model.named_parameters() if p.grad.abs().max() > 0}
    stem = next(
        n for n, p in before.items() if p.ndim == 4
    )  # the first conv: the loss reaches the whole depth
    assert {n for n in before if n.startswith("head.")} | {stem} <= changed
    if "resnet" not in key:  # timm ResNets zero-init each block's last BN scale at step 0
        assert moving == set(before)


@pytest.mark.slow  # the torch.export-based ONNX exporter takes 20-50 s per network on a 2-core CPU
@pytest.mark.parametrize("key", ONNX_NETWORKS)
def test_onnx_export_parity(key: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _build(key, 6)
    meta = ModelMeta(
        model_name=key, num_classes=6, class_names=list("abcdef"), mean=[0.5] * 3, std=[0.25] * 3
    )
    result = export_model(model, meta, tmp_path / f"{key}.onnx", "onnx", (64, 96))
    assert result.path.is_file()
    assert result.parity.max_abs_diff < 1e-3 and result.parity.argmax_agreement > 99.0


# --------------------------------------------------------------------------- the authors' parameter counts
# Counted by instantiating the authors' classes (sacmehta/ESPNet train/Model.py and test/Model.py,
# linksense/LightNet models/mobilenetv2plus.py), p=2, q=8; REFERENCE.md section 7.
AUTHORS_PARAMS = [
    ("espnet_c", {}, 19, 349_193),
    ("espnet_c", {}, 20, 349_449),
    ("espnet", {}, 19, 363_462),
    ("espnet", {}, 20, 365_109),
    ("espnet", {"skip": "level1"}, 19, 362_949),
    ("espnet", {"skip": "level1"}, 20, 364_569),
    ("espnet_c", {"q": 3}, 19, 187_273),
    ("espnet", {"q": 3}, 19, 201_542),
    ("mobilenetv2plus", {}, 19, 8_301_113),
    ("mobilenetv2plus", {}, 20, 8_301_410),
]


@pytest.mark.parametrize(("name", "options", "classes", "expected"), AUTHORS_PARAMS)
def test_parameter_count_equals_authors_code(name: str, options: dict, classes: int, expected: int) -> None:
    with torch.device("meta"):
        model = build_model(name, classes, **options)
    assert sum(p.numel() for p in model.parameters()) == expected


# ------------------------------------------------------------------------------- authors' key layouts
def _random_state(layout: dict[str, list[int]], drop_num_batches: bool) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            if not drop_num_batches:
                state[key] = torch.tensor(7)
            continue
        state[key] = torch.rand(shape, generator=generator) + 0.5  # positive: valid running_var too
    return state


LAYOUT_MODELS = {
    "espnet_c": ("espnet_c", {}),
    "espnet": ("espnet", {}),
    "espnet_released": ("espnet", {"skip": "level1"}),
    "mobilenetv2plus": ("mobilenetv2plus", {}),
}


@pytest.mark.parametrize("layout", sorted(LAYOUT_MODELS))
@pytest.mark.parametrize("drop_num_batches", [True, False])
def test_authors_layout_loads_key_exactly(layout: str, drop_num_batches: bool) -> None:
    name, options = LAYOUT_MODELS[layout]
    model = build_model(name, 19, **options)
    state = _random_state(LAYOUTS[layout], drop_num_batches)
    report = load_segmentor_checkpoint(model, dict(state))
    assert report["format"] == "authors"
    own = model.state_dict()
    converted = model.authors_to_segkd(state)
    assert len(converted) == len(state)  # a renaming: no key merged or dropped
    for key, value in converted.items():
        assert torch.equal(own[key], value), key
    stats = {k for k in own if k.endswith("num_batches_tracked")}  # absent from old releases: filled with 0
    assert set(own) - stats == set(converted) - stats and set(converted) <= set(own)
    # one stray or missing key is an error naming it
    with pytest.raises(CheckpointError, match="missing"):
        broken = dict(state)
        broken.pop(next(k for k in broken if k.endswith("weight")))
        load_segmentor_checkpoint(build_model(name, 19, **options), broken)


def test_lightnet_checkpoint_file_with_model_state_and_dataparallel_prefix(tmp_path: Path) -> None:
    state = _random_state(LAYOUTS["mobilenetv2plus"], drop_num_batches=True)
    path = tmp_path / "cityscapes_mobilenetv2_gtfine_best_model.pkl"
    torch.save({"model_state": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    model = build_model("mobilenetv2plus", 19)
    assert load_segmentor_checkpoint(model, path)["format"] == "authors"
    assert torch.equal(model.head.classifier.bias, state["score.conv.2.bias"])


def test_segkd_checkpoint_of_a_seed_network_is_still_segkd() -> None:
    model = build_model("espnet", 7)
    assert load_segmentor_checkpoint(build_model("espnet", 7), model.state_dict())["format"] == "segkd"
    with pytest.raises(CheckpointError, match="classes"):
        load_segmentor_checkpoint(build_model("espnet_c", 20), _random_state(LAYOUTS["espnet_c"], True))


def test_fixed_output_stride_networks_reject_other_strides() -> None:
    for name in ("espnet_c", "espnet", "mobilenetv2plus"):
        with pytest.raises(ValueError, match="output stride"):
            build_model(name, 19, output_stride=16)
    with pytest.raises(ValueError, match="K >= 5"):
        build_model("espnet", 4)


def test_profile_counts_transposed_convs_in_both_conventions() -> None:
    from torch import nn

    from segkd.models.profile import count_macs_paper, profile_model

    up = nn.Sequential(nn.ConvTranspose2d(3, 2, 2, stride=2, bias=False))
    assert count_macs_paper(up, (4, 4)) == 4 * 4 * 3 * 2 * 2 * 2  # 16 inputs x 3 ch, each to 2 ch x 2x2
    assert profile_model(up, (4, 4))["deploy"]["breakdown"]["conv_linear"] == 384
