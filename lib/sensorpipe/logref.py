"""Identifiers as logs name them: keyed digests, never the identifier, and not a plain hash
either. A hospital device's serial identifies its patient, and serials are guessable: all
720,000 monitor and pacemaker serial x sensor pairs reversed an unkeyed 48-bit digest in 0.1 s
(issue 30). An HMAC under a key the deployment holds cannot be reversed without the key.

The key: the PHI token key for protected readings (SENSORPIPE_PHI_TOKEN_KEY, the key the
general zone's tokens use), else SENSORPIPE_LOG_KEY; both hex. With neither, a random key per
driver process: references then match within one run only, which still lets an operator follow
one key through a run's logs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from typing import Any

PHI_KEY_ENV = "SENSORPIPE_PHI_TOKEN_KEY"
LOG_KEY_ENV = "SENSORPIPE_LOG_KEY"
_RUN_KEY = os.urandom(32)


def log_key(settings: Any, environ: Mapping[str, str] | None = None) -> bytes:
    """The key of this run's log references (`settings`: config.Settings)."""
    environ = os.environ if environ is None else environ
    names = (PHI_KEY_ENV, LOG_KEY_ENV) if settings.lake.protected_root else (LOG_KEY_ENV,)
    for name in names:
        text = environ.get(name, "").strip()
        if text:
            try:
                return bytes.fromhex(text)
            except ValueError:
                from sensorpipe.config import ConfigError

                raise ConfigError(f"{name}: must be hex (`sensorpipe phi-key` makes one)") from None
    return _RUN_KEY


def identifier_ref(key: bytes, *parts: str) -> str:
    """The reference of an identifier (e.g. a device and a sensor) under `key`: 64 bits."""
    message = "\x00".join(map(str, parts)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:16]


def device_namer(settings: Any, environ: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """How reports of a run name a device: as it is for trains; as its keyed reference for
    protected readings (a serial identifies a patient; reports are outside the zone)."""
    if not settings.lake.protected_root:
        return str
    key = log_key(settings, environ)
    return lambda device: f"device {identifier_ref(key, device)}"
