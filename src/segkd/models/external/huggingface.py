"""Hugging Face ``transformers`` semantic-segmentation models as teachers (optional extra ``segkd[hf]``).

``name``: a local folder written by ``save_pretrained`` or a hub id (then resolved by ``transformers`` from
its cache or the hub); any architecture that ``AutoModelForSemanticSegmentation`` loads (SegFormer,
UperNet, BEiT, DPT, MobileViT, Data2Vec-Vision, ...). Mask2Former / MaskFormer / OneFormer are *universal*
segmentation models (mask + class queries, no per-pixel ``logits``) and are not loaded by this class.

Safe loading (nothing in the folder, the hub or the config can run code):

* Weights: ``*.safetensors`` files when the folder has them (``use_safetensors=True``: transformers never
  unpickles); a local folder with only ``pytorch_model.bin`` (or its shards) is read by segkd's own
  reader, :func:`segkd.checkpoint_io.read_checkpoint` (``weights_only=True``; a file holding other
  objects is refused in one line naming it), and the tensors are handed to ``from_pretrained`` as
  ``state_dict``. A hub id is loaded from safetensors only (a hub repository with only
  ``pytorch_model.bin`` is refused: download it and give the folder).
* Never runs repository code (``trust_remote_code=False``).
* ``distill.teacher.options`` reach ``from_pretrained`` only when listed in :data:`ALLOWED_OPTIONS`
  (revision, subfolder, variant, cache folder, dtype, attention implementation, mismatched sizes);
  anything else (``weights_only: false``, ``trust_remote_code: true``, ``use_safetensors: false``,
  ``code_revision``, hub kernels, adapters, GGUF files, device maps, quantization ...) is refused in one
  line naming the key, before any file is read.

* Classes: ``config.id2label`` (generic ``LABEL_i`` names count as unknown; then only the count is checked).
* Scores: ``model(pixel_values=x).logits`` (SegFormer: 1/4 of the input; UperNet: the input size).
* Default ``feat``: the input of ``decode_head.classifier`` when the model has it (SegFormer: the fused
  MLP embedding, 256 channels for B0; UperNet: the FPN bottleneck), otherwise the input of the last
  ``Conv2d`` with ``num_labels`` outputs outside an auxiliary head.
* Input normalisation: ``image_mean`` / ``image_std`` of the folder's ``preprocessor_config.json`` (read
  as JSON), else ImageNet's; ``distill.teacher.input_mean/input_std`` override both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from segkd.checkpoint_io import read_checkpoint, short_error
from segkd.models.checkpoints import CheckpointError

INSTALL_HINT = "the huggingface teacher source needs transformers: pip install 'segkd[hf]'"
# from_pretrained keywords a config may set: which files (all read safely, below) and how to build the model.
FILE_OPTIONS = ("revision", "subfolder", "variant", "cache_dir")
MODEL_OPTIONS = ("dtype", "torch_dtype", "attn_implementation", "ignore_mismatched_sizes")
ALLOWED_OPTIONS = FILE_OPTIONS + MODEL_OPTIONS
# Keywords segkd sets itself; a config may repeat them with these values only.
FIXED_OPTIONS = {"trust_remote_code": False, "weights_only": True, "use_safetensors": True}
REFUSED_BECAUSE = {
    "weights_only": "it would unpickle pytorch_model.bin with the full unpickler, which runs any code "
                    "the file holds",
    "trust_remote_code": "it would run Python code from the model folder or the hub",
    "use_safetensors": "it would read a pickled pytorch_model.bin instead of the safetensors files",
    "code_revision": "it selects repository code to run",
    "use_kernels": "it loads compiled kernels from the hub (native code)",
    "kernel_config": "it loads compiled kernels from the hub (native code)",
    "allow_all_kernels": "it loads compiled kernels from the hub (native code)",
    "adapter_kwargs": "it loads a PEFT adapter from other files",
    "adapter_name": "it loads a PEFT adapter from other files",
    "gguf_file": "it reads another weights file",
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def scores(network: nn.Module, images: Tensor) -> Tensor:
    """Class scores (N, K, h, w) of a ``*ForSemanticSegmentation`` model."""
    return network(pixel_values=images).logits


def class_names(config: Any) -> list[str] | None:
    """``id2label`` in index order, or None when the labels are transformers' generic ``LABEL_i``."""
    id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    names = [id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]
    return None if all(re.fullmatch(r"LABEL_\d+", n) for n in names) else names


def default_feat_module(model: nn.Module, num_labels: int) -> str:
    """``decode_head.classifier:input`` if present, else the last num_labels-output conv's input."""
    modules = dict(model.named_modules())
    if "decode_head.classifier" in modules:
        return "decode_head.classifier:input"
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.out_channels == num_labels
             and "aux" not in n]
    if not convs:
        raise ValueError("huggingface teacher: no classifier conv found; set distill.teacher.feat_module")
    return f"{convs[-1]}:input"


def preprocessor_stats(name: str) -> tuple[list[float], list[float]] | None:
    """(image_mean, image_std) from a local folder's ``preprocessor_config.json``, if it has them."""
    path = Path(name) / "preprocessor_config.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("do_normalize") is False or "image_mean" not in data or "image_std" not in data:
        return None
    return list(data["image_mean"]), list(data["image_std"])


def checked_options(options: dict[str, Any]) -> dict[str, Any]:
    """``distill.teacher.options`` that may reach ``from_pretrained`` (see the module docstring); any
    other key raises ValueError (one line naming it and why)."""
    allowed = {}
    for key, value in options.items():
        if key in ALLOWED_OPTIONS:
            allowed[key] = value
        elif key in FIXED_OPTIONS and value is FIXED_OPTIONS[key]:
            continue  # segkd's own setting, repeated
        else:
            because = REFUSED_BECAUSE.get(key, "segkd passes from_pretrained only options that read nothing "
                                               "but the model's config and safetensors weights")
            raise ValueError(
                f"distill.teacher.options.{key}: {json.dumps(value, default=str)} is refused for a "
                f"huggingface teacher ({because}); allowed options: {', '.join(sorted(ALLOWED_OPTIONS))}"
            )
    return allowed


def local_weights(folder: Path, variant: str | None = None) -> list[Path] | None:
    """The pickled weight files of a local model folder (``pytorch_model.bin`` or its shards, with the
    ``variant`` infix), or None when it has safetensors files (those are preferred). Raises ValueError
    when it has neither."""
    if any(folder.glob("*.safetensors")):
        return None
    stem = "pytorch_model" + (f".{variant}" if variant else "")
    index = folder / f"{stem}.bin.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / shard for shard in shards]
    if (folder / f"{stem}.bin").is_file():
        return [folder / f"{stem}.bin"]
    raise ValueError(f"huggingface teacher '{folder}': no weights there (expected {', '.join(WEIGHT_FILES)})")


def build(cfg: Any, num_classes: int) -> tuple[nn.Module, list[str] | None, str]:
    """(model from ``cfg.name``, its class names or None, default feat module)."""
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    options = checked_options(cfg.options)
    model = _load(cfg.name, options)
    names = class_names(model.config) or cfg.class_names
    return model, names, default_feat_module(model, model.config.num_labels)


def _load(name: str, options: dict[str, Any]) -> nn.Module:
    """The model of a local folder or hub id, read safely (module docstring); errors in one line."""
    from transformers import AutoConfig, AutoModelForSemanticSegmentation
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING

    local = Path(name).is_dir()
    folder = Path(name) / options.get("subfolder", "")
    pickled = local_weights(folder, options.get("variant")) if local else None
    if pickled is None:  # safetensors: a local folder's, or a hub repository's (never its .bin)
        return _one_line(name, lambda: AutoModelForSemanticSegmentation.from_pretrained(
            name, local_files_only=local, use_safetensors=True, trust_remote_code=False, **options))
    state: dict[str, Tensor] = {}
    for path in pickled:
        part = read_checkpoint(path)  # weights_only=True; a crafted file is refused in one line naming it
        if not isinstance(part, dict):
            raise CheckpointError(f"{path}: not a state dict (got {type(part).__name__})")
        state.update(part)
    config = _one_line(name, lambda: AutoConfig.from_pretrained(
        name, local_files_only=True, trust_remote_code=False,
        **{k: v for k, v in options.items() if k in FILE_OPTIONS}))
    if type(config) not in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING:
        raise CheckpointError(f"huggingface teacher '{name}': {type(config).__name__} is not a semantic "
                              "segmentation model (AutoModelForSemanticSegmentation)")
    model_class = MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING[type(config)]
    return _one_line(name, lambda: model_class.from_pretrained(
        None, config=config, state_dict=state, **{k: v for k, v in options.items() if k in MODEL_OPTIONS}))


def _one_line(name: str, load: Callable[[], Any]) -> Any:
    """``load()``, with transformers' errors (often many lines) turned into one line naming the teacher."""
    try:
        return load()
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"huggingface teacher '{name}': cannot load it ({short_error(err)})") from None
