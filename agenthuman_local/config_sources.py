"""Where Settings come from, and which wins (SPEC §1): lowest to highest, the dataclass defaults
< `config/default.yaml` < `--config FILE` < `AGENTHUMAN_<SECTION>__<KEY>` environment variables <
command-line flags (`--set section.key=v`).

Each layer is read into {dotted key: raw value} (an unknown key is an error), each value is cast
to its field's type (text from the environment and `--set` is parsed) and checked against its
range (`config.check_value`), and the result is nested into the sections of `Settings`. Every
error names the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from agenthuman_local.config import (
    ConfigError,
    Settings,
    check_value,
    config_keys,
    field_types,
    section_types,
)

ENV_PREFIX = "AGENTHUMAN_"
# Environment names that look like config keys but mean something else (SPEC §2, §3).
RESERVED_ENV = frozenset({"AGENTHUMAN_API_KEY", "AGENTHUMAN_AVATAR"})
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "default.yaml"


# Number fields: the values taken as they are (a bool never is one) and what the error calls them.
_NUMBERS: dict[type, tuple[tuple[type, ...], str]] = {
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
}


def _cast(key: str, raw: Any, tp: Any, *, from_text: bool) -> Any:
    """Cast `raw` to the field type `tp`. `from_text` is True for env vars and `--set` values."""
    bad = ConfigError(f"config key '{key}': bad value {raw!r}")
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        inner = next(a for a in args if a is not type(None))
        if raw is None or (from_text and str(raw).strip().lower() in ("null", "none", "")):
            return None
        return _cast(key, raw, inner, from_text=from_text)
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower() if from_text or isinstance(raw, int) else None
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise ConfigError(f"config key '{key}': expected true or false, got {raw!r}")
    if tp in _NUMBERS:
        accepted, what = _NUMBERS[tp]
        if isinstance(raw, bool):
            raise bad
        if isinstance(raw, accepted):
            return tp(raw)
        if from_text:
            try:
                return tp(str(raw).strip())
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected {what}, got {raw!r}")
    if tp is str:
        if isinstance(raw, str):
            return raw
        if from_text:
            return str(raw)
        raise ConfigError(f"config key '{key}': expected a string, got {raw!r}")
    if tp is Path:
        if isinstance(raw, str | Path) and str(raw):
            return Path(raw)
        raise ConfigError(f"config key '{key}': expected a path, got {raw!r}")
    raise ConfigError(f"config key '{key}': unsupported type {tp!r}")


def _flatten(data: Any, source: str) -> dict[str, Any]:
    """YAML mapping → {dotted key: raw value}; unknown keys are errors."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    sections = section_types()
    top = field_types(Settings)
    flat: dict[str, Any] = {}
    for name, value in data.items():
        if name in sections:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: config key '{name}' must be a mapping")
            known = field_types(sections[name])
            for sub, sub_value in value.items():
                if sub not in known:
                    raise ConfigError(f"{source}: unknown config key '{name}.{sub}'")
                flat[f"{name}.{sub}"] = sub_value
        elif name in top:
            flat[str(name)] = value
        else:
            raise ConfigError(f"{source}: unknown config key '{name}'")
    return flat


def _from_env(environ: Mapping[str, str]) -> dict[str, str]:
    keys = {k.replace(".", "__").upper(): k for k in config_keys()}
    flat = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        key = keys.get(name[len(ENV_PREFIX) :])
        if key is not None:
            flat[key] = value
    return flat


def parse_set(items: list[str]) -> dict[str, str]:
    """`--set section.key=value` items → {dotted key: text}; unknown keys are errors."""
    known = set(config_keys())
    flat = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        if key not in known:
            raise ConfigError(f"--set: unknown config key '{key}'")
        flat[key] = value
    return flat


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    return _flatten(data, str(path))


def build_settings(
    layers: list[tuple[dict[str, Any], bool]],
) -> Settings:
    """Apply `(flat values, from_text)` layers, lowest precedence first, onto the defaults."""
    values: dict[str, Any] = {}
    types_by_key: dict[str, Any] = {}
    for name, tp in field_types(Settings).items():
        if dataclasses.is_dataclass(tp):
            for sub, sub_tp in field_types(tp).items():
                types_by_key[f"{name}.{sub}"] = sub_tp
        else:
            types_by_key[name] = tp
    for flat, from_text in layers:
        for key, raw in flat.items():
            values[key] = _cast(key, raw, types_by_key[key], from_text=from_text)
    for key, value in values.items():
        check_value(key, value)
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in values.items():
        section, _, sub = key.partition(".")
        if sub:
            sections.setdefault(section, {})[sub] = value
        else:
            top[key] = value
    types_by_section = section_types()
    for name, kwargs in sections.items():
        top[name] = types_by_section[name](**kwargs)
    return Settings(**top)


def load_settings(
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    default_path: Path | None = DEFAULT_CONFIG_PATH,
) -> Settings:
    """Build Settings from every layer of SPEC §1.

    `overrides` are the command-line flags, already as dotted keys (`port`, `data_dir`, or the
    result of `parse_set`); their values may be text.
    """
    layers: list[tuple[dict[str, Any], bool]] = []
    if default_path is not None and default_path.exists():
        layers.append((load_yaml(default_path), False))
    if config_path is not None:
        layers.append((load_yaml(config_path), False))
    layers.append((_from_env(environ if environ is not None else {}), True))
    if overrides:
        known = set(config_keys())
        for key in overrides:
            if key not in known:
                raise ConfigError(f"unknown config key '{key}'")
        layers.append((dict(overrides), True))
    return build_settings(layers)
