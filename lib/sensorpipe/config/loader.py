"""Typed settings from conf/<env>.yaml plus environment overrides, validated once at start-up.

    settings = load_settings("conf/local.yaml")

Values may reference the environment as ``${NAME}`` or ``${NAME:-default}`` (bucket names,
endpoints): an unset reference without a default is an error naming the field. A single field
can be overridden with ``SENSORPIPE__<SECTION>__<FIELD>`` (for example
``SENSORPIPE__LAKE__FORMAT=delta``); the value is read as a YAML scalar. Every error names the
field, what was expected and what arrived. Secrets never live here: they come from the
environment or Secrets Manager where they are used.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import yaml

from sensorpipe.config.checks import ConfigError
from sensorpipe.config.stream import ViewConfig

ENV_PREFIX = "SENSORPIPE__"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

T = TypeVar("T")

if typing.TYPE_CHECKING:
    from sensorpipe.config.stream import Settings


@overload
def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings: ...
@overload
def load_settings(
    path: str | Path, environ: Mapping[str, str] | None = None, *, kind: type[T]
) -> T: ...


def load_settings(
    path: str | Path, environ: Mapping[str, str] | None = None, kind: type | None = None
) -> Any:
    """Read, interpolate, override and validate one configuration file as `kind` (a settings
    class; the streaming job's `Settings` by default) and return an instance of it."""
    kind = kind or _default_kind()
    environ = os.environ if environ is None else environ
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {path}: expected a mapping at the top level")
    _apply_overrides(raw, environ)
    if kind is ViewConfig:  # a job's file: only its warehouse and view blocks are read
        raw = {k: v for k, v in raw.items() if k in ("warehouse", "view")}
    return _build(kind, raw, "", environ)


@overload
def load_settings_for_job(path: str | Path) -> Settings: ...
@overload
def load_settings_for_job(path: str | Path, kind: type[T]) -> T: ...


def load_settings_for_job(path: str | Path, kind: type | None = None) -> Any:
    """`load_settings` for a job's main(): a configuration error ends the process at start-up
    with exit code 2 and a message naming the field."""
    try:
        return load_settings(path, kind=kind or _default_kind())
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _default_kind() -> type:
    from sensorpipe.config.stream import Settings

    return Settings


def _apply_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for key, text in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {'.'.join(parts[:-1])} is not a section")
        node[parts[-1]] = yaml.safe_load(text) if text != "" else None


def _build(cls: type, raw: Any, prefix: str, environ: Mapping[str, str]) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'configuration'}: expected a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown field (expected one of {', '.join(sorted(known))})"
        )
    values = {}
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{name}: required field is missing")
            continue
        value = _coerce(hints[f.name], raw[f.name], name, environ)
        if "check" in f.metadata:
            f.metadata["check"](name, value)
        values[f.name] = value
    return cls(**values)


def _coerce(tp: Any, value: Any, name: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        value = _interpolate(value, name, environ)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, f"{name}.", environ)
    if origin in (typing.Union, types.UnionType):
        if (value is None or value == "") and type(None) in args:
            return None  # an optional field set to "" (e.g. ${VAR:-}) is unset
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, name, environ)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{name}: expected one of {choices}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {type(value).__name__}")
        (inner,) = args
        return [_coerce(inner, v, f"{name}[{i}]", environ) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping, got {type(value).__name__}")
        return {str(k): _scalar_text(v, f"{name}.{k}", environ) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        return float(value)
    if tp is str:
        if value is None or isinstance(value, (dict, list)) or str(value).strip() == "":
            raise ConfigError(f"{name}: expected a non-empty string, got {value!r}")
        return str(value)
    raise TypeError(f"{name}: unsupported settings type {tp!r}")  # a bug in this module


def _scalar_text(value: Any, name: str, environ: Mapping[str, str]) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise ConfigError(f"{name}: expected a scalar, got {value!r}")
    if isinstance(value, bool):
        return "true" if value else "false"
    return _interpolate(str(value), name, environ)


def _interpolate(text: str, name: str, environ: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        if var in environ and environ[var] != "":
            return environ[var]
        if default is not None:
            return default
        raise ConfigError(f"{name}: refers to ${{{var}}}, which is not set in the environment")

    return _ENV_REF.sub(replace, text)
