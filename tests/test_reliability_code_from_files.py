"""Second fault trial (issue 25), security: no config setting can make a file from a user run code.

Each test provokes one fault found in the trial: a Hugging Face teacher whose options switch off safe
loading, timm keywords that make timm load a weights file itself, a torch with the ``weights_only`` bypass
(CVE-2025-32434), and dependency minimums that allow such versions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from _engine_helpers import tiny_overrides
from segkd.checkpoint_io import UnsafeTorchError, read_checkpoint, write_checkpoint
from segkd.cli import main as cli_main
from segkd.config_schema import ModelConfig, TeacherConfig
from segkd.models import build_model_from_config
from segkd.models.external import build_external_teacher
from test_external_teachers import _tiny_segformer
from test_reliability_checkpoints import _crafted_checkpoint, _empty_config, _Payload

GENERIC_LABELS = [f"LABEL_{i}" for i in range(9)]  # the synthetic dataset's 9 classes, names unknown


def _crafted_hf_folder(folder: Path, marker: Path, keep_safetensors: bool = False) -> Path:
    """A tiny SegFormer saved by ``save_pretrained`` whose ``pytorch_model.bin`` runs code when unpickled.

    ``config.json`` loses its ``dtype``: transformers then reads the weights file to find it, the path on
    which its ``weights_only`` option reached ``torch.load``.
    """
    model = _tiny_segformer(folder, labels=GENERIC_LABELS)
    config = json.loads((folder / "config.json").read_text())
    config.pop("dtype", None)
    config.pop("torch_dtype", None)
    (folder / "config.json").write_text(json.dumps(config))
    if not keep_safetensors:
        for path in folder.glob("*.safetensors"):
            path.unlink()
    state = dict(model.state_dict())
    state["extra"] = _Payload(marker)
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def _hf_train_argv(tmp_path: Path, folder: Path, options: str) -> list[str]:
    teacher = f"distill.teacher={{source: huggingface, name: {folder}, options: {options}}}"
    return ["train", str(_empty_config(tmp_path)), *tiny_overrides(tmp_path / "run", iters=1), teacher,
            "distill.losses=[{name: kd}]"]


# ------------------------------------------------------------------------------------------ Hugging Face
@pytest.mark.parametrize("options", ["{weights_only: false}", "{}"], ids=["weights_only false", "default"])
def test_huggingface_teacher_with_a_crafted_weights_file_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, options: str
):
    marker = tmp_path / "code_ran"
    folder = _crafted_hf_folder(tmp_path / "hf", marker)
    capsys.readouterr()  # save_pretrained's progress bar
    assert cli_main(_hf_train_argv(tmp_path, folder, options)) == 2
    err = capsys.readouterr().err.strip()
    assert not marker.exists()  # nothing ran
    assert len(err.splitlines()) == 1, err
    if options == "{}":
        assert f"{folder / 'pytorch_model.bin'} contains objects that are not tensors" in err
    else:
        assert "distill.teacher.options.weights_only: false is refused" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key, value", [
    ("weights_only", False), ("trust_remote_code", True), ("use_safetensors", False),
    ("code_revision", "main"), ("use_kernels", True), ("kernel_config", {"x": 1}),
    ("adapter_kwargs", {"adapter_name": "a"}), ("gguf_file", "model.gguf"), ("device_map", "auto"),
    ("offload_folder", "/tmp/x"), ("quantization_config", {"quant_method": "bitsandbytes"}),
])
def test_huggingface_options_that_could_load_code_or_other_files_are_refused(tmp_path: Path, key: str,
                                                                             value: object):
    folder = tmp_path / "hf"
    _tiny_segformer(folder, labels=GENERIC_LABELS)
    cfg = TeacherConfig(name=str(folder), source="huggingface", options={key: value})
    with pytest.raises(ValueError) as info:
        build_external_teacher(cfg, 9)
    message = str(info.value)
    assert message.startswith(f"distill.teacher.options.{key}: ") and "\n" not in message
    assert "allowed options: attn_implementation, cache_dir, dtype" in message


def test_huggingface_teacher_prefers_safetensors_and_reads_a_bin_with_segkds_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import segkd.models.external.huggingface as hf

    marker = tmp_path / "code_ran"
    both = _crafted_hf_folder(tmp_path / "both", marker, keep_safetensors=True)
    options = {"revision": "main", "dtype": "float32"}
    cfg = TeacherConfig(name=str(both), source="huggingface", options=options)
    teacher = build_external_teacher(cfg, 9)  # model.safetensors is read; the crafted .bin never is
    assert not marker.exists()
    reference = _tiny_segformer(tmp_path / "ref", labels=GENERIC_LABELS)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in teacher.network.state_dict().items())
    # A folder with only pytorch_model.bin (tensors only): read by segkd.checkpoint_io (weights_only=True).
    only_bin = tmp_path / "bin"
    reference.save_pretrained(only_bin)
    for path in only_bin.glob("*.safetensors"):
        path.unlink()
    torch.save(reference.state_dict(), only_bin / "pytorch_model.bin")
    read = []
    monkeypatch.setattr(hf, "read_checkpoint", lambda path: read.append(Path(path)) or read_checkpoint(path))
    teacher = build_external_teacher(TeacherConfig(name=str(only_bin), source="huggingface"), 9)
    assert read == [only_bin / "pytorch_model.bin"]
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in teacher.network.state_dict().items())


def test_huggingface_folder_without_weights_is_one_line(tmp_path: Path):
    folder = tmp_path / "hf"
    _tiny_segformer(folder, labels=GENERIC_LABELS)
    for path in folder.glob("*.safetensors"):
        path.unlink()
    with pytest.raises(ValueError) as info:
        build_external_teacher(TeacherConfig(name=str(folder), source="huggingface"), 9)
    assert str(info.value).startswith(f"huggingface teacher '{folder}': no weights") and "\n" not in str(
        info.value)


# -------------------------------------------------------------------------------------------------- timm
@pytest.mark.parametrize("key", ["checkpoint_path", "pretrained_cfg_overlay", "pretrained_cfg"])
def test_timm_keywords_that_load_a_weights_file_are_refused(tmp_path: Path, key: str):
    marker = tmp_path / "code_ran"
    crafted = _crafted_checkpoint(tmp_path / "evil.pth", marker)
    value = str(crafted) if key == "checkpoint_path" else {"file": str(crafted)}
    cfg = ModelConfig(name="fcn_resnet10t", pretrained=True, options={"timm_kwargs": {key: value}})
    with pytest.raises(ValueError) as info:
        build_model_from_config(cfg, 9)
    message = str(info.value)
    assert f"timm_kwargs.{key}" in message and "model.pretrained=FILE" in message and "\n" not in message
    assert not marker.exists()


# ------------------------------------------------------------------------------------ torch and versions
@pytest.mark.parametrize("version", ["2.5.1+cu121", "2.1.0", "1.13.1"])
def test_checkpoint_reader_refuses_a_torch_with_the_weights_only_bypass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
):
    path = write_checkpoint({"w": torch.ones(2)}, tmp_path / "w.pt")
    monkeypatch.setattr(torch, "__version__", version)
    with pytest.raises(UnsafeTorchError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert f"torch {version}" in message and "CVE-2025-32434" in message and "torch>=2.6" in message
    assert "\n" not in message
    monkeypatch.setattr(torch, "__version__", "2.6.0")
    assert torch.equal(read_checkpoint(path)["w"], torch.ones(2))


def test_the_cli_says_so_in_one_line_on_an_old_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture):
    path = write_checkpoint({"model": {"w": torch.ones(2)}}, tmp_path / "w.pt")
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    assert cli_main(["export", str(path), "--format", "onnx", "--size", "32x32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CVE-2025-32434" in err


def _minimums() -> dict[str, tuple[int, ...]]:
    """``{package: minimum version}`` of pyproject.toml's quoted ``"name>=x.y"`` requirements."""
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    found: dict[str, tuple[int, ...]] = {}
    for name, version in re.findall(r'"([\w-]+)>=([\d.]+)"', text):
        found.setdefault(name, tuple(int(p) for p in version.split(".")))
    return found


def test_dependency_minimums_exclude_loaders_that_run_code():
    """torch < 2.6 runs code under weights_only=True (CVE-2025-32434); torchvision 0.21 is torch 2.6's; timm
    before 1.0.26 unpickled local checkpoints (``load_checkpoint`` / ``checkpoint_path``) with
    ``weights_only=False`` by default."""
    minimums = _minimums()
    assert minimums["torch"] >= (2, 6) and minimums["torchvision"] >= (0, 21)
    assert minimums["timm"] >= (1, 0, 26)


def test_no_onnx_session_can_load_a_custom_op_library():
    """ONNX Runtime runs native code only through ``register_custom_ops_library``; segkd never calls it and
    builds every session itself (no user-given SessionOptions)."""
    src = Path(__file__).parents[1] / "src" / "segkd"
    files = {p.relative_to(src).as_posix(): p.read_text() for p in src.rglob("*.py")}
    users = [name for name, text in files.items() if "register_custom_ops_library" in text]
    sessions = [name for name, text in files.items() if "SessionOptions(" in text]
    assert users == [] and sessions == ["export/runners.py"]
