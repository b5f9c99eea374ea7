"""Field checks for the settings classes (`field(metadata=check(...))`), and the error every
configuration problem raises, naming the field."""

from __future__ import annotations

import os
import posixpath
import re
import typing
from typing import Any

_PROCESSING_TIME = re.compile(r"^\d+(\.\d+)?\s*(second|seconds|minute|minutes|ms|milliseconds)$")
_INTERVAL = re.compile(r"^\d+\s*(second|seconds|minute|minutes|hour|hours|day|days)$")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the field."""


def check(validator: typing.Callable[[str, Any], None]) -> dict[str, Any]:
    """Field metadata: `validator(field name, value)` runs when the settings are loaded."""
    return {"check": validator}


def positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name}: expected a positive integer, got {value}")


def optional_positive(name: str, value: int | None) -> None:
    if value is not None:
        positive(name, value)


def trigger(name: str, value: str) -> None:
    if value != "available_now" and not _PROCESSING_TIME.match(value):
        raise ConfigError(
            f"{name}: expected 'available_now' or a processing-time interval such as "
            f"'10 seconds', got {value!r}"
        )


def optional_trigger(name: str, value: str | None) -> None:
    if value is not None:
        trigger(name, value)


def unit_interval(name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{name}: expected a number in (0, 1], got {value}")


def interval(name: str, value: str) -> None:
    if not _INTERVAL.match(value):
        raise ConfigError(f"{name}: expected an interval such as '1 minute', got {value!r}")


_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(name: str, value: str) -> int:
    """A duration as Spark's options write it ("30d", "12h", "90s"), in seconds."""
    match = _DURATION.match(value)
    if not match:
        raise ConfigError(f"{name}: expected a duration such as '30d' or '12h', got {value!r}")
    return int(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def optional_duration(name: str, value: str | None) -> None:
    if value is not None:
        duration_seconds(name, value)


def verified_tls_jdbc_url(name: str, url: str) -> None:
    """A PostgreSQL JDBC URL that requires TLS and verifies the server's certificate and name
    (`sslmode=verify-full`): what the EMR configurations need for the hospital's database and
    the metastore. Local runs keep plain loopback connections."""
    if url.startswith("jdbc:postgresql:") and not re.search(r"[?&]sslmode=verify-full(&|$)", url):
        raise ConfigError(
            f"{name}: on EMR the connection must require verified TLS: add "
            f"sslmode=verify-full to the JDBC URL, got {url!r}"
        )


# What lib/sensorpipe/jsonstore.py can write and every node and later step can read.
SHARED_SCHEMES = ("s3://", "s3a://")


def shared_path(name: str, path: str) -> None:
    """On EMR a path every node and every later step sees: a local folder would be inside the
    YARN container, gone with it."""
    if not path.startswith(SHARED_SCHEMES):
        raise ConfigError(
            f"{name}: on EMR expected an s3:// location, got {path!r} (a local folder lives in "
            "the YARN container and is lost with it; hdfs:// is not written by the job's "
            "document store)"
        )


def _normalised(path: str) -> str:
    """A path as Hadoop and the OS resolve it: `.` and `..` segments and repeated slashes
    folded; local paths made absolute."""
    if "://" in path:
        scheme, rest = path.split("://", 1)
        bucket, _, key = rest.partition("/")
        return f"{scheme}://{bucket}/" + posixpath.normpath("/" + key).lstrip("/")
    return os.path.normpath(os.path.abspath(path))


def within(path: str, root: str, *, strictly: bool = False) -> bool:
    """Whether `path` lies inside `root` (or, unless `strictly`, is it), compared once both are
    resolved: a text prefix test let `<root>/../../lake/events` through, which Hadoop resolves
    outside the root."""
    inner, outer = _normalised(path).rstrip("/"), _normalised(root).rstrip("/")
    return inner.startswith(outer + "/") or (inner == outer and not strictly)
