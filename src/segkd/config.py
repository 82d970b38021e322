"""Load, validate, override and save configs.

YAML files hold plain data; :func:`from_dict` checks it against the dataclasses of
:mod:`segkd.config_schema` (unknown keys and wrong types raise :class:`ConfigError` naming the key).
A file may start with ``base: other.yaml`` (or a list) to inherit from other files, merged deeply.
Command-line overrides are ``key.sub=value`` strings whose value is parsed as YAML
(``optim.lr=0.02``, ``data.crop_size=[64,64]``, ``distill.losses.0.weight=2``).

Hand-written rather than OmegaConf/Hydra: those add a dependency and their own interpolation language,
while segkd needs only dataclass validation with key-naming errors and dotted overrides.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from segkd.config_schema import ExperimentConfig, TeacherConfig, UnlabeledConfig

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key is unknown, has a value of the wrong type, or a file cannot be read."""


# A decimal number as people write them: 1e-3, 5E4, -2.5e+1, .5, 3. (YAML 1.1 resolves "1e-3" to a string
# because its float pattern requires a dot; no inf/nan, no underscores, no hex).
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads exponent notation without a dot (``1e-3``) as a float.

    YAML 1.2 does; YAML 1.1, which PyYAML implements, reads ``1e-3`` as the string "1e-3". With this loader a
    number in any position (including free-form ``options`` mappings passed on to losses) is a float.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def yaml_load(text: str) -> Any:
    """Parse YAML text with :class:`_Loader` (safe: plain data only)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


# --------------------------------------------------------------------------------------------- validation
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` checked (and lightly converted, int -> float) against type ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from plain data, checking every key and type.

    Missing keys take the defaults in code; unknown keys raise :class:`ConfigError` naming the full
    dotted key and listing the valid ones.
    """
    data = {} if data is None else data
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix or '<root>'}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{full}'. Valid keys here: {', '.join(fields)}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data (YAML-ready) copy of a config dataclass."""
    return dataclasses.asdict(cfg)


# ------------------------------------------------------------------------------------------ files & merge
def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively by ``update`` (mappings merge, everything else replaces)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping, resolving its ``base:`` files relative to it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse config file {path}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    bases = data.pop("base", None) or []
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = deep_merge(merged, read_yaml(path.parent / base))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_override(data: dict[str, Any], keys: list[str], value: Any, free_form: bool = False) -> None:
    """Set ``data[k0][k1]... = value`` in place; each key must already exist unless inside ``options``."""
    node: Any = data
    for depth, key in enumerate(keys[:-1]):
        node = _child(node, key, keys[: depth + 1], free_form)
        # A stage's sections are merged over the recipe's and validated when the stage is built.
        free_form = free_form or key in _FREE_FORM_KEYS or (keys[0] == "stages" and depth >= 1)
    last = keys[-1]
    if isinstance(node, list):
        index = _index(node, last, keys)
        node[index] = value
    elif isinstance(node, dict):
        if last not in node and not free_form:
            raise ConfigError(f"unknown config key '{'.'.join(keys)}'. Valid keys here: {', '.join(node)}")
        node[last] = value
    else:
        raise ConfigError(f"config key '{'.'.join(keys[:-1])}' is not a mapping or list")


_FREE_FORM_KEYS = {"options"}


def _index(node: list[Any], key: str, keys: list[str]) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"config key '{'.'.join(keys)}': list index '{key}' out of range (len {len(node)})")
    return int(key)


def _child(node: Any, key: str, path: list[str], free_form: bool) -> Any:
    """Descend one level for an override, creating mappings inside free-form ``options`` sections."""
    if isinstance(node, list):
        return node[_index(node, key, path)]
    if not isinstance(node, dict):
        raise ConfigError(f"config key '{'.'.join(path[:-1])}' is not a mapping or list")
    if node.get(key) is None:
        if key not in node and not (free_form or path[-2:-1] == ["options"]):
            raise ConfigError(f"unknown config key '{'.'.join(path)}'. Valid keys here: {', '.join(node)}")
        node[key] = {}
    return node[key]


# ---------------------------------------------------------------------------------------------- public
# Optional sections (None by default) that a ``section.key.sub=value`` override opens with their defaults.
_OPTIONAL_SECTIONS = {("distill", "teacher"): TeacherConfig, ("data", "unlabeled"): UnlabeledConfig}

def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    cls: type[T] = ExperimentConfig,  # type: ignore[assignment]
) -> T:
    """Load ``path`` (or the defaults when None), apply ``key=value`` overrides and validate.

    Overrides are applied to the validated defaults-filled data, so every key they name must exist
    (free-form ``options`` mappings excepted); the result is validated once more.
    """
    raw = read_yaml(path) if path is not None else {}
    data = to_dict(from_dict(cls, raw))
    for text in overrides:
        keys, value = parse_override(text)
        for (section, key), default in _OPTIONAL_SECTIONS.items():
            if keys[:2] == [section, key] and len(keys) > 2 and data[section][key] is None:
                data[section][key] = to_dict(default())  # e.g. a teacher.* override opens the section
        apply_override(data, keys, value)
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML (atomically) and return its path."""
    from segkd.outputs import write_text

    return write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
