"""Config system: defaults, YAML load with inheritance, overrides, errors naming the key, round-trip."""

from __future__ import annotations

import pytest
import yaml

from segkd.config import ConfigError, from_dict, load_config, save_config, to_dict
from segkd.config_schema import ExperimentConfig, LossTermConfig, ModelConfig
from segkd.registry import Registry, RegistryError


def write(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_defaults_without_file():
    cfg = load_config()
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.optim.poly_power == 0.9
    assert cfg.data.name == "synthetic"
    assert cfg.distill.teacher is None and cfg.distill.losses == []


def test_yaml_load_nested_and_list_of_dataclasses(tmp_path):
    path = write(
        tmp_path / "c.yaml",
        {
            "model": {"name": "pspnet_resnet18", "num_classes": 19},
            "optim": {"lr": 1},  # an int where a float is expected is accepted and converted
            "distill": {
                "teacher": {"name": "deeplabv3_resnet101", "checkpoint": "t.pth"},
                "losses": [{"name": "kd", "weight": 1.0, "options": {"temperature": 4}}],
            },
        },
    )
    cfg = load_config(path)
    assert cfg.model.name == "pspnet_resnet18" and cfg.model.num_classes == 19
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert isinstance(cfg.distill.teacher, ModelConfig) and cfg.distill.teacher.checkpoint == "t.pth"
    assert cfg.distill.losses == [LossTermConfig("kd", 1.0, {"temperature": 4})]


def test_base_inheritance_merges_deeply(tmp_path):
    write(tmp_path / "base.yaml", {"optim": {"lr": 0.02, "momentum": 0.8}, "train": {"iters": 5}})
    path = write(tmp_path / "child.yaml", {"base": "base.yaml", "optim": {"lr": 0.05}})
    cfg = load_config(path)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.train.iters) == (0.05, 0.8, 5)


def test_overrides_parse_yaml_values(tmp_path):
    path = write(tmp_path / "c.yaml", {"distill": {"losses": [{"name": "kd"}]}})
    cfg = load_config(
        path,
        [
            "optim.lr=0.5",
            "data.crop_size=[64,32]",
            "train.resume=auto",
            "model.pretrained=/x/y.pth",
            "distill.losses.0.weight=3",
            "distill.losses.0.options.temperature=2",
            "data.options.num_samples=7",
        ],
    )
    assert cfg.optim.lr == 0.5
    assert cfg.data.crop_size == [64, 32]
    assert cfg.train.resume == "auto"
    assert cfg.model.pretrained == "/x/y.pth"
    assert cfg.distill.losses[0].weight == 3.0
    assert cfg.distill.losses[0].options == {"temperature": 2}
    assert cfg.data.options == {"num_samples": 7}


def test_override_creates_teacher_section():
    cfg = load_config(None, ["distill.teacher.name=test_tiny_teacher"])
    assert cfg.distill.teacher.name == "test_tiny_teacher"


@pytest.mark.parametrize(
    "override, key",
    [("optim.lrr=1", "optim.lrr"), ("nope=1", "nope"), ("data.crop.size=1", "data.crop")],
)
def test_unknown_override_key_names_the_key(override, key):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        load_config(None, [override])


def test_unknown_yaml_key_names_full_path(tmp_path):
    path = write(tmp_path / "c.yaml", {"train": {"itres": 5}})
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.itres'.*Valid keys here: .*iters"):
        load_config(path)


@pytest.mark.parametrize(
    "data, key",
    [
        ({"train": {"iters": "many"}}, "train.iters"),
        ({"train": {"iters": 1.5}}, "train.iters"),
        ({"optim": {"lr": True}}, "optim.lr"),
        ({"optim": {"name": "rmsprop"}}, "optim.name"),
        ({"data": {"crop_size": 64}}, "data.crop_size"),
        ({"distill": {"losses": [{"weight": "x"}]}}, "distill.losses.0.weight"),
    ],
)
def test_wrong_types_name_the_key(tmp_path, data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write(tmp_path / "c.yaml", data))


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["justakey"])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["distill.teacher.name=t", "optim.lr=0.3", "data.options.num_samples=5"])
    cfg.distill.losses.append(LossTermConfig("cwd", 3.0, {"tau": 4.0}))
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(path) == cfg
    assert from_dict(ExperimentConfig, to_dict(cfg)) == cfg
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_registry_lists_valid_names():
    reg: Registry[object] = Registry("widget")
    reg.register("b")(lambda: "B")
    reg.add("a", lambda x=1: x)
    assert reg.names() == ["a", "b"] and "a" in reg and len(reg) == 2
    assert reg.build("a", x=5) == 5
    with pytest.raises(RegistryError, match="unknown widget 'c'. Valid widget names: a, b"):
        reg.get("c")
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("a", lambda: None)


def test_registry_build_names_a_misspelt_option():
    reg: Registry[object] = Registry("loss")

    def kd(spec, *, temperature: float = 1.0, reduction: str = "mean"):
        return temperature

    reg.add("kd", kd)
    assert reg.build("kd", None, temperature=2.0) == 2.0
    expected = r"loss 'kd': .*'temprature'.*Valid options: spec, temperature, reduction"
    with pytest.raises(RegistryError, match=expected):
        reg.build("kd", None, temprature=2.0)
