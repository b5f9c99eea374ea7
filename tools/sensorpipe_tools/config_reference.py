"""docs/configuration.md, generated from the settings classes (lib/sensorpipe/config/): every
field of every section with its type, default and the comment written above it in the code.

    sensorpipe config-reference > docs/configuration.md

tests/test_config_reference.py fails when the committed page differs from a fresh rendering."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

from sensorpipe.config import DeploySettings, HealthSettings, Settings

APPLICATIONS = (
    (Settings, "The streaming job and the lake's batch jobs", "conf/local.yaml, conf/emr.yaml"),
    (HealthSettings, "The hospital's jobs", "conf/health-local.yaml, conf/health-emr.yaml"),
    (DeploySettings, "`sensorpipe deploy`", "conf/deploy.yaml"),
)


def field_comments(cls: type) -> dict[str, str]:
    """The `#` comment lines directly above each field, and a trailing `# ...` on its line."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        text = line.strip()
        if text.startswith("#"):
            pending.append(text.lstrip("# ").rstrip())
            continue
        match = re.match(r"^([a-z_][a-z0-9_]*)\s*:", text)
        if match:
            trailing = text.split("  # ", 1)[1] if "  # " in text else ""
            comments[match.group(1)] = " ".join([*pending, trailing]).strip()
        pending = []
    return comments


def _type_text(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if dataclasses.is_dataclass(tp):
        return "section"
    if origin in (typing.Union, __import__("types").UnionType):
        inner = [a for a in args if a is not type(None)]
        return " \\| ".join(_type_text(a) for a in inner) + " or null"
    if origin is dict:
        return "mapping"
    if origin is list:
        return f"list of {_type_text(args[0])}"
    return getattr(tp, "__name__", str(tp))


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "null" if f.default is None else f"`{f.default}`"
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "(section)" if dataclasses.is_dataclass(value) else f"`{value}`"
    return "**required**"


def _section(cls: type, prefix: str, out: list[str]) -> None:
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            nested.append((f.name, tp))
            continue
        doc = comments.get(f.name, "").replace("|", "\\|")
        rows.append(f"| `{prefix}{f.name}` | {_type_text(tp)} | {_default_text(f)} | {doc} |")
    if rows:
        out += ["", f"### `{prefix.rstrip('.') or '(top level)'}` ({cls.__name__})", ""]
        out += ["| field | type | default | meaning |", "|---|---|---|---|", *rows]
    for name, tp in nested:
        _section(tp, f"{prefix}{name}.", out)


def render_reference() -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from the settings classes in `lib/sensorpipe/config/` by",
        "`sensorpipe config-reference`; `tests/test_config_reference.py` fails when this page is",
        "stale. Values may use `${VAR}` or `${VAR:-default}`; any field can be overridden with",
        "`SENSORPIPE__<SECTION>__<FIELD>`; an unknown, missing or wrong field fails at start-up,",
        "naming it.",
    ]
    for cls, title, files in APPLICATIONS:
        out += ["", f"## {title} ({files})"]
        _section(cls, "", out)
    return "\n".join(out) + "\n"
