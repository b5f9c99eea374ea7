"""Where alerts go: the train's AWS IoT device shadow, or locally a JSON file per train with
the same semantics (version checks, partial merges)."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from sensorpipe.retry import RetriesExhausted, aws_throttling_or_network, call_with_backoff

ALERTS_KEY = "sensorpipe_alerts"
THROTTLING = {
    "ThrottlingException",
    "ServiceUnavailableException",
    "InternalFailureException",
    "RequestThrottledException",
}

LOG = logging.getLogger(__name__)


class VersionConflict(Exception):
    """Another writer updated the shadow since it was read."""


class AlertDeliveryError(RuntimeError):
    """A shadow update failed after the bounded retries; the batch fails and is re-run."""


class PermanentDeliveryError(AlertDeliveryError):
    """The shadow refuses this train's update for good (invalid, too large, no such thing,
    not allowed): re-running the batch cannot help, so the train's update is dead-lettered and
    the other trains are still served."""


# AWS IoT Data Plane errors that a retry or a re-run cannot cure.
PERMANENT = {
    "InvalidRequestException",
    "RequestEntityTooLargeException",
    "ResourceNotFoundException",
    "UnauthorizedException",
    "MethodNotAllowedException",
    "UnsupportedDocumentEncodingException",
}


class ShadowStore(Protocol):
    closed_retention_hours: int

    def read(self, thing: str) -> tuple[dict[str, Any], int | None]: ...

    def write(self, thing: str, alerts: dict[str, Any], version: int | None) -> None: ...


@dataclass
class IotShadowStore:
    """The AWS IoT Data Plane (GetThingShadow / UpdateThingShadow)."""

    client: Any  # boto3 iot-data client
    shadow_name: str | None = None
    closed_retention_hours: int = 24
    max_retries: int = 8
    retry_initial_s: float = 0.1
    sent: list[dict[str, Any]] = field(default_factory=list)

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        if self.shadow_name:
            kwargs["shadowName"] = self.shadow_name
        try:
            return call_with_backoff(
                fn,
                what,
                aws_throttling_or_network(THROTTLING),
                self.max_retries,
                self.retry_initial_s,
                5.0,
                **kwargs,
            )
        except RetriesExhausted as exc:
            raise AlertDeliveryError(str(exc)) from None
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in PERMANENT and what.startswith("UpdateThingShadow"):
                raise PermanentDeliveryError(f"{what}: {code}: {exc}") from None
            raise

    def read(self, thing: str) -> tuple[dict[str, Any], int | None]:
        try:
            resp = self._call(
                f"GetThingShadow {thing}", self.client.get_thing_shadow, thingName=thing
            )
        except self.client.exceptions.ResourceNotFoundException:
            return {}, None
        doc = json.loads(resp["payload"].read())
        return doc.get("state", {}).get("desired", {}).get(ALERTS_KEY, {}) or {}, doc.get("version")

    def write(self, thing: str, alerts: dict[str, Any], version: int | None) -> None:
        payload: dict[str, Any] = {"state": {"desired": {ALERTS_KEY: alerts}}}
        if version is not None:
            payload["version"] = version
        try:
            self._call(
                f"UpdateThingShadow {thing}",
                self.client.update_thing_shadow,
                thingName=thing,
                payload=json.dumps(payload).encode(),
            )
        except self.client.exceptions.ConflictException:
            raise VersionConflict(thing) from None
        self.sent.append({"thing": thing, "alerts": alerts, "sent_at": time.time()})


@dataclass
class FileOutbox:
    """A shadow document per train in a folder, versioned like the device shadow, and a log of
    every update sent (`updates.jsonl`)."""

    root: Path
    closed_retention_hours: int = 24

    def _path(self, thing: str) -> Path:
        # The thing name comes from the data (device_id): percent-encoded, a "/" or ".." in it
        # cannot name a file outside the outbox (issue 13, item 5).
        return Path(self.root) / f"{quote(thing, safe='')}.json"

    def read(self, thing: str) -> tuple[dict[str, Any], int | None]:
        path = self._path(thing)
        if not path.exists():
            return {}, None
        doc = json.loads(path.read_text())
        return doc["state"]["desired"].get(ALERTS_KEY, {}), doc["version"]

    def write(self, thing: str, alerts: dict[str, Any], version: int | None) -> None:
        current, current_version = self.read(thing)
        if version != current_version:
            raise VersionConflict(thing)
        merged = {k: dict(v) for k, v in current.items()}
        for key, entry in alerts.items():
            if entry is None:  # as the device shadow does: null removes the key
                merged.pop(key, None)
            else:
                merged.setdefault(key, {}).update(entry)
        doc = {"version": (current_version or 0) + 1, "state": {"desired": {ALERTS_KEY: merged}}}
        path = self._path(thing)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(tmp, path)
        with open(Path(self.root) / "updates.jsonl", "a") as log:
            log.write(
                json.dumps(
                    {
                        "thing": thing,
                        "version": doc["version"],
                        "alerts": alerts,
                        "sent_at": time.time(),
                    }
                )
                + "\n"
            )


def iot_data_endpoint(iot: Any) -> str:
    """The account's device shadow endpoint in the client's region (IoT DescribeEndpoint,
    iot:Data-ATS): what `alerts.endpoint_url` is when the deployment does not give it."""
    return "https://" + iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]


def shadow_store_from_settings(settings: Any) -> ShadowStore:
    """The configured shadow store (`settings` is config.AlertSettings)."""
    if settings.kind == "outbox":
        return FileOutbox(Path(settings.outbox_path), settings.closed_retention_hours)
    if settings.kind == "iot":
        import boto3

        endpoint = settings.endpoint_url or iot_data_endpoint(
            boto3.client("iot", region_name=settings.region)
        )
        client = boto3.client("iot-data", region_name=settings.region, endpoint_url=endpoint)
        return IotShadowStore(client, settings.shadow_name, settings.closed_retention_hours)
    raise AlertDeliveryError("alerts.kind is none: no shadow store configured")
