"""Teachers from mmsegmentation, Hugging Face and torchvision (issue 15), on tiny random models, no network.

The mmseg state dicts are generated here from mmseg's architecture as its code defines it
(backbones/resnet.py ResNetV1c, utils/res_layer.py, decode_heads/{aspp,psp,fcn}_head.py with mmcv
ConvModule ``conv`` / ``bn`` children), independently of segkd's key mapping, and the heads are recomputed
by hand with functional ops from those mmseg-named tensors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segkd.checkpoint_io import UnsafeCheckpointError
from segkd.config import from_dict
from segkd.config_schema import ExperimentConfig, InputConfig, TeacherConfig
from segkd.input_convention import conversion
from segkd.models.checkpoints import CheckpointError
from segkd.models.external import ClassMismatchError, build_external_teacher
from segkd.models.external.common import ClassMap, FeatureHook, class_groups, load_weights_only
from segkd.models.external.mmseg import build_mmseg_segmentor, mmseg_to_segkd
from segkd.models.input_adapter import InputConverter

# ------------------------------------------------------------------- mmseg layout, from mmseg's own code
BLOCKS = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}
HEAD_CH = {18: 128, 50: 512, 101: 512}  # decode_head.channels of the r18-d8 / r50-d8 / r101-d8 configs


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


def _conv_module(prefix: str, c_out: int, c_in: int, k: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.conv.weight": (c_out, c_in, k, k)} | _bn(f"{prefix}.bn", c_out)


def mmseg_layout(head: str, depth: int, k: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of mmseg's EncoderDecoder ``<head>_r<depth>-d8`` with ``k`` classes."""
    out: dict[str, tuple[int, ...]] = {}
    out |= {"backbone.stem.0.weight": (32, 3, 3, 3)} | _bn("backbone.stem.1", 32)
    out |= {"backbone.stem.3.weight": (32, 32, 3, 3)} | _bn("backbone.stem.4", 32)
    out |= {"backbone.stem.6.weight": (64, 32, 3, 3)} | _bn("backbone.stem.7", 64)
    kind, counts = BLOCKS[depth]
    exp = 1 if kind == "basic" else 4
    inplanes = 64
    for i, (n, stride) in enumerate(zip(counts, (1, 2, 1, 1))):
        planes = 64 * 2**i
        for j in range(n):
            p = f"backbone.layer{i + 1}.{j}"
            c_in = inplanes if j == 0 else planes * exp
            if kind == "basic":
                out |= {f"{p}.conv1.weight": (planes, c_in, 3, 3)} | _bn(f"{p}.bn1", planes)
                out |= {f"{p}.conv2.weight": (planes, planes, 3, 3)} | _bn(f"{p}.bn2", planes)
            else:
                out |= {f"{p}.conv1.weight": (planes, c_in, 1, 1)} | _bn(f"{p}.bn1", planes)
                out |= {f"{p}.conv2.weight": (planes, planes, 3, 3)} | _bn(f"{p}.bn2", planes)
                out |= {f"{p}.conv3.weight": (planes * exp, planes, 1, 1)} | _bn(f"{p}.bn3", planes * exp)
            if j == 0 and (stride != 1 or inplanes != planes * exp):
                out |= {f"{p}.downsample.0.weight": (planes * exp, inplanes, 1, 1)}
                out |= _bn(f"{p}.downsample.1", planes * exp)
        inplanes = planes * exp
    c_in, c = 512 * exp, HEAD_CH[depth]
    if head == "deeplabv3":
        out |= _conv_module("decode_head.image_pool.1", c, c_in, 1)
        for i, d in enumerate((1, 12, 24, 36)):
            out |= _conv_module(f"decode_head.aspp_modules.{i}", c, c_in, 1 if d == 1 else 3)
        out |= _conv_module("decode_head.bottleneck", c, 5 * c, 3)
    else:
        for i in range(4):
            out |= _conv_module(f"decode_head.psp_modules.{i}.1", c, c_in, 1)
        out |= _conv_module("decode_head.bottleneck", c, c_in + 4 * c, 3)
    out |= {"decode_head.conv_seg.weight": (k, c, 1, 1), "decode_head.conv_seg.bias": (k,)}
    c_aux_in = 256 * exp
    out |= _conv_module("auxiliary_head.convs.0", c_aux_in // 4, c_aux_in, 3)
    out |= {"auxiliary_head.conv_seg.weight": (k, c_aux_in // 4, 1, 1), "auxiliary_head.conv_seg.bias": (k,)}
    return out


def random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


@pytest.mark.parametrize("head", ["deeplabv3", "pspnet"])
@pytest.mark.parametrize("depth", [18, 50, 101])
def test_mmseg_layout_maps_key_exactly(head, depth):
    layout = mmseg_layout(head, depth, 19)
    mapped = mmseg_to_segkd({k: torch.empty(s, device="meta") for k, s in layout.items()})
    with torch.device("meta"):
        model = build_mmseg_segmentor(f"{head}_r{depth}-d8", 19)
    own = model.state_dict()
    assert len(mapped) == len(layout)  # no two mmseg keys collapse onto one
    assert set(mapped) == set(own)
    assert all(tuple(mapped[k].shape) == tuple(own[k].shape) for k in own)


def _cbr(x, sd, p, dilation=1):
    """mmcv ConvModule (conv, BN in eval, ReLU) from mmseg-named tensors."""
    w = sd[f"{p}.conv.weight"]
    y = F.conv2d(x, w, padding=dilation * (w.shape[-1] // 2), dilation=dilation)
    y = F.batch_norm(y, sd[f"{p}.bn.running_mean"], sd[f"{p}.bn.running_var"], sd[f"{p}.bn.weight"],
                     sd[f"{p}.bn.bias"], False, 0.0, 1e-5)
    return F.relu(y)


def _mmseg_head(head, x, sd):
    """mmseg ASPPHead / PSPHead forward (eval) written from decode_heads/{aspp,psp}_head.py."""
    size = x.shape[-2:]
    if head == "deeplabv3":
        pool = _cbr(F.adaptive_avg_pool2d(x, 1), sd, "decode_head.image_pool.1")
        outs = [F.interpolate(pool, size=size, mode="bilinear", align_corners=False)]
        outs += [_cbr(x, sd, f"decode_head.aspp_modules.{i}", d) for i, d in enumerate((1, 12, 24, 36))]
    else:
        outs = [x] + [F.interpolate(_cbr(F.adaptive_avg_pool2d(x, s), sd, f"decode_head.psp_modules.{i}.1"),
                                    size=size, mode="bilinear", align_corners=False)
                      for i, s in enumerate((1, 2, 3, 6))]
    feat = _cbr(torch.cat(outs, 1), sd, "decode_head.bottleneck")
    return F.conv2d(feat, sd["decode_head.conv_seg.weight"], sd["decode_head.conv_seg.bias"]), feat


@pytest.mark.parametrize("head", ["deeplabv3", "pspnet"])
def test_mmseg_checkpoint_loads_and_heads_compute_mmseg_function(head, tmp_path):
    names = ["road", "car", "sky"]
    sd = random_state(mmseg_layout(head, 18, 3))
    path = tmp_path / "mmseg.pth"
    torch.save({"meta": {"CLASSES": tuple(names), "PALETTE": [[0, 0, 0]] * 3}, "state_dict": sd}, path)
    cfg = TeacherConfig(name=f"{head}_r18-d8", source="mmseg", checkpoint=str(path))
    teacher = build_external_teacher(cfg, 3, ["Road", "car", "sky"], output_stride=8)
    net = teacher.network
    loaded = net.state_dict()
    for key, value in mmseg_to_segkd(sd).items():
        assert torch.equal(loaded[key], value), key
    x = torch.randn(1, 512, 7, 9)
    with torch.no_grad():
        logits, feat = net.head(x)
        ref_logits, ref_feat = _mmseg_head(head, x, sd)
    torch.testing.assert_close(feat, ref_feat, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    # named outputs at the student's grid; feat is the hooked bottleneck output (128 channels for r18)
    with torch.no_grad():
        out = teacher(torch.randn(2, 3, 40, 24))
        native = net(torch.randn(1, 3, 8, 8))
    assert out.logits.shape == (2, 3, 5, 3) and out.feat.shape == (2, 128, 5, 3)
    assert teacher.feat_channels == 128 and len(out.stages) == 4
    assert native.feat.shape[1] == 128


def test_mmseg_resnet18_variant_dilations():
    """mmseg BasicBlock: conv1 dilated (contract_dilation: first block d/2), conv2 never dilated."""
    with torch.device("meta"):
        body = build_mmseg_segmentor("pspnet_r18-d8", 2).backbone
    assert [body.layer3[0].conv1.dilation, body.layer3[1].conv1.dilation] == [(1, 1), (2, 2)]
    assert [body.layer4[0].conv1.dilation, body.layer4[1].conv1.dilation] == [(2, 2), (4, 4)]
    assert all(getattr(body, f"layer{i}")[j].conv2.dilation == (1, 1) for i in (1, 2, 3, 4) for j in (0, 1))
    assert body.layer4[1].conv2.padding == (1, 1)


def test_mmseg_refuses_unknown_keys_and_names(tmp_path):
    sd = random_state(mmseg_layout("pspnet", 18, 2))
    sd["decode_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="decode_head.extra.weight"):
        mmseg_to_segkd(sd)
    with pytest.raises(ValueError, match="supported are"):
        build_mmseg_segmentor("upernet_r50-d8", 2)


# ------------------------------------------------------------------------------------ class mapping
def test_class_mismatch_is_refused_with_a_clear_message(tmp_path):
    sd = random_state(mmseg_layout("pspnet", 18, 3))
    path = tmp_path / "mmseg.pth"
    torch.save({"meta": {"CLASSES": ("road", "car", "sky")}, "state_dict": sd}, path)
    cfg = TeacherConfig(name="pspnet_r18-d8", source="mmseg", checkpoint=str(path))
    with pytest.raises(ClassMismatchError, match="differ from the dataset's.*class_map"):
        build_external_teacher(cfg, 2, ["car", "background"])
    cfg.class_map = {"car": "car", "background": ["road", "sky"]}
    teacher = build_external_teacher(cfg, 2, ["car", "background"])
    with torch.no_grad():
        x = torch.randn(1, 3, 32, 32)
        raw = teacher.network(x).logits
        out = teacher(x).logits
    torch.testing.assert_close(out[:, 0], raw[:, 1])
    torch.testing.assert_close(out[:, 1], torch.logsumexp(raw[:, [0, 2]], dim=1))


def test_class_map_values_by_hand():
    t = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    out = ClassMap([[2], [0, 1]])(t).flatten()
    torch.testing.assert_close(out, torch.tensor([3.0, math.log(math.e + math.e**2)]))
    # softmax over the merged scores = teacher probabilities of each group (all kept here)
    p = torch.softmax(t.flatten(), 0)
    torch.testing.assert_close(torch.softmax(out, 0), torch.stack([p[2], p[0] + p[1]]))


def test_class_groups_rules():
    assert class_groups(["a", "b"], 2, ["A", "b"], 2, None, "t") is None  # case-insensitive equal
    assert class_groups(None, 2, ["a", "b"], 2, None, "t") is None  # names unknown: counts decide
    with pytest.raises(ClassMismatchError, match="3: names unknown"):
        class_groups(None, 3, ["a", "b"], 2, None, "t")
    assert class_groups(["a", "b", "c"], 3, ["x", "y"], 2, {"x": 2, "y": ["a", "b"]}, "t") == [[2], [0, 1]]
    with pytest.raises(ClassMismatchError, match="unmapped: y"):
        class_groups(["a", "b"], 2, ["x", "y"], 2, {"x": "a"}, "t")
    with pytest.raises(ClassMismatchError, match="not a teacher class"):
        class_groups(["a", "b"], 2, ["x"], 1, {"x": "zebra"}, "t")
    with pytest.raises(ClassMismatchError, match="outside"):
        class_groups(["a", "b"], 2, ["x"], 1, {"x": 5}, "t")


def test_input_conversion_converts_normalisation():
    u = torch.rand(1, 3, 4, 4)
    m_d, s_d, m_t, s_t = [0.1, 0.2, 0.3], [0.5, 0.6, 0.7], [0.5, 0.5, 0.5], [0.25, 0.5, 1.0]
    convert = conversion(InputConfig(mean=m_d, std=s_d), InputConfig(mean=m_t, std=s_t))
    x_d = (u - torch.tensor(m_d).view(1, 3, 1, 1)) / torch.tensor(s_d).view(1, 3, 1, 1)
    x_t = (u - torch.tensor(m_t).view(1, 3, 1, 1)) / torch.tensor(s_t).view(1, 3, 1, 1)
    torch.testing.assert_close(InputConverter(convert)(x_d), x_t)
    assert conversion(InputConfig(mean=m_d, std=s_d), InputConfig(mean=m_d, std=s_d)) is None


def test_weights_only_loading_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": {"obj": ClassMap([[0]])}}, path)
    with pytest.raises(UnsafeCheckpointError, match="segkd never unpickles arbitrary objects.*Re-save"):
        load_weights_only(path)


def test_feature_hook_errors():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Flatten())
    with pytest.raises(ValueError, match="not a module"):
        FeatureHook(net, "nope")
    hook = FeatureHook(net, "1")
    net(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, C, h, w\)"):
        hook.pop()


# ------------------------------------------------------------------------------------------ torchvision
def test_torchvision_local_file_loads_exactly_with_hooked_feat(tmp_path):
    from torchvision.models import get_model

    torch.manual_seed(0)
    net = get_model("deeplabv3_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=4,
                    aux_loss=True).eval()
    path = tmp_path / "tv.pth"
    torch.save(net.state_dict(), path)
    cfg = TeacherConfig(name="deeplabv3_mobilenet_v3_large", source="torchvision", checkpoint=str(path))
    teacher = build_external_teacher(cfg, 4, None, output_stride=16)
    loaded = teacher.network.state_dict()
    assert set(loaded) == set(net.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = teacher(x)
        feat_ref = net.backbone(x)["out"]
        for i in range(4):  # everything before the final 1x1 conv
            feat_ref = net.classifier[i](feat_ref)
        logits_ref = F.interpolate(net(x)["out"], size=(4, 6), mode="bilinear", align_corners=False)
    assert out.feat.shape == (1, 256, 4, 6) and teacher.feat_channels == 256
    torch.testing.assert_close(out.feat, feat_ref)
    torch.testing.assert_close(out.logits, logits_ref)


@pytest.mark.parametrize("name,channels", [("lraspp_mobilenet_v3_large", 128), ("fcn_resnet50", 512)])
def test_torchvision_random_init_named_outputs(name, channels):
    torch.manual_seed(0)
    teacher = build_external_teacher(TeacherConfig(name=name, source="torchvision"), 3, None, output_stride=8)
    with torch.no_grad():
        out = teacher(torch.randn(2, 3, 48, 40))
    assert out.logits.shape == (2, 3, 6, 5) and out.feat.shape == (2, channels, 6, 5)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_torchvision_cache_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = TeacherConfig(name="lraspp_mobilenet_v3_large", source="torchvision", pretrained=True)
    with pytest.raises(FileNotFoundError, match="not in torchvision's cache"):
        build_external_teacher(cfg, 21, None)


def test_torchvision_voc_categories_refused_for_other_classes(tmp_path, monkeypatch):
    """Cached default weights carry VOC categories: a 3-class dataset is refused without class_map."""
    from torchvision.models import get_model, get_model_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = get_model_weights("lraspp_mobilenet_v3_large").DEFAULT
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    net = get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=21)
    torch.save(net.state_dict(), cache / weights.url.rsplit("/", 1)[-1])
    cfg = TeacherConfig(name="lraspp_mobilenet_v3_large", source="torchvision", pretrained=True)
    with pytest.raises(ClassMismatchError, match="__background__"):
        build_external_teacher(cfg, 3, ["background", "cat", "dog"])
    cfg.class_map = {"background": "__background__", "cat": "cat", "dog": "dog"}
    out = build_external_teacher(cfg, 3, ["background", "cat", "dog"])(torch.randn(1, 3, 32, 32))
    assert out.logits.shape == (1, 3, 4, 4)


# ----------------------------------------------------------------------------------------- Hugging Face
def _tiny_segformer(folder, labels=("bg", "cat", "dog")):
    transformers = pytest.importorskip("transformers")
    config = transformers.SegformerConfig(
        num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
        patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2],
        decoder_hidden_size=16, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(0)
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    model.save_pretrained(folder)
    return model


def test_huggingface_local_folder_named_outputs_and_hook(tmp_path):
    ref = _tiny_segformer(tmp_path / "seg")
    cfg = TeacherConfig(name=str(tmp_path / "seg"), source="huggingface")
    teacher = build_external_teacher(cfg, 3, ["bg", "cat", "dog"], output_stride=8)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in teacher.network.state_dict().items())
    x = torch.randn(2, 3, 64, 32)
    captured = {}
    ref.decode_head.classifier.register_forward_pre_hook(lambda m, a: captured.setdefault("f", a[0]))
    with torch.no_grad():
        out = teacher(x)
        ref_logits = ref(pixel_values=x).logits  # 1/4 of the input
    assert ref_logits.shape == (2, 3, 16, 8)
    assert out.logits.shape == (2, 3, 8, 4) and out.feat.shape == (2, 16, 8, 4)
    torch.testing.assert_close(out.logits, F.interpolate(ref_logits, size=(8, 4), mode="bilinear",
                                                         align_corners=False))
    torch.testing.assert_close(out.feat, F.interpolate(captured["f"], size=(8, 4), mode="bilinear",
                                                       align_corners=False))
    with pytest.raises(ClassMismatchError, match="bg, cat, dog"):
        build_external_teacher(cfg, 3, ["bg", "cat", "bird"])


def test_huggingface_preprocessor_normalisation(tmp_path):
    import json

    _tiny_segformer(tmp_path / "seg")
    (tmp_path / "seg" / "preprocessor_config.json").write_text(
        json.dumps({"do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    cfg = TeacherConfig(name=str(tmp_path / "seg"), source="huggingface",
                        feat_module="decode_head.linear_fuse")
    teacher = build_external_teacher(cfg, 3, None, student_input=InputConfig())
    torch.testing.assert_close(teacher.convert.scale.flatten().float(), torch.tensor([0.458, 0.448, 0.45]))
    assert teacher.feat_channels == 16


# ---------------------------------------------------------------------------------- builder integration
def test_train_step_with_torchvision_teacher_and_feature_adapter():
    from segkd.engine import builder

    torch.manual_seed(0)
    cfg = from_dict(ExperimentConfig, {
        "model": {"name": "test_tiny_student", "num_classes": 3},
        "distill": {"teacher": {"source": "torchvision", "name": "lraspp_mobilenet_v3_large"},
                    "losses": [{"name": "kd"}, {"name": "fitnet"}]},
    })
    teacher = builder.build_teacher(cfg, 3, ["a", "b", "c"])
    student = builder.build_student(cfg.model, 3)
    distiller = builder.build_distiller(cfg, student, teacher, 3)
    images, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    step = distiller.compute(images, labels)
    assert set(step.terms) >= {"kd", "fitnet"} and torch.isfinite(step.total)
    step.total.backward()
    assert distiller.losses["fitnet"].adapter.weight.grad is not None  # 16 -> 128 channel adapter trained
    assert not any(p.grad is not None for p in teacher.parameters())


def test_segkd_teacher_with_hooked_feature_module():
    """source: segkd with feat_module: the hooked module's output replaces the head's feat."""
    torch.manual_seed(0)
    cfg = TeacherConfig(name="test_tiny_teacher", feat_module="backbone.stages.2")
    teacher = build_external_teacher(cfg, 3, ["a", "b", "c"], output_stride=8)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = teacher(x)
        ref = teacher.network(x)
    assert teacher.feat_channels == 24 and teacher.stage_channels == [8, 16, 24, 32]
    torch.testing.assert_close(out.feat, ref.stages[2])
    torch.testing.assert_close(out.logits, ref.logits)
