"""Alerts to the train: incident transitions -> the desired state of its AWS IoT device shadow.

A train that loses the network in a tunnel reads its shadow again when it reconnects and gets
the latest state, so one update per train per micro-batch carries its open alerts under
`state.desired.sensorpipe_alerts.<alert id>`: sensor, event time, score, severity, status.
Only those fields are written (the shadow merges partial documents), so other writers' fields
are never overwritten. Each update carries the version read; on a version conflict the shadow
is read again and the patch merged anew. Entries the shadow already holds are not sent again,
so a replayed batch (same alert ids, same documents) sends nothing. Throttling backs off.

Locally (`alerts.kind: outbox`) the shadow is a JSON file per train with the same semantics.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from sensorpipe.retry import RetriesExhausted, aws_throttling_or_network, call_with_backoff

ALERTS_KEY = "sensorpipe_alerts"
THROTTLING = {
    "ThrottlingException",
    "ServiceUnavailableException",
    "InternalFailureException",
    "RequestThrottledException",
}


class VersionConflict(Exception):
    """Another writer updated the shadow since it was read."""


class AlertDeliveryError(RuntimeError):
    """A shadow update failed after the bounded retries; the batch fails and is re-run."""


class ShadowStore(Protocol):
    def read(self, thing: str) -> tuple[dict[str, Any], int | None]: ...

    def write(self, thing: str, alerts: dict[str, Any], version: int | None) -> None: ...


@dataclass
class IotShadowStore:
    """The AWS IoT Data Plane (GetThingShadow / UpdateThingShadow)."""

    client: Any  # boto3 iot-data client
    shadow_name: str | None = None
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

    def _path(self, thing: str) -> Path:
        return Path(self.root) / f"{thing}.json"

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


def alert_patches(transitions: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """Per train, the alert entries these transitions set (the last transition of an alert in
    the batch wins). Rows: device_id, sensor, event_time, anomaly_score, alert_id,
    alert_action, alert_severity."""
    patches: dict[str, dict[str, dict[str, Any]]] = {}
    for row in transitions.sort_values(["event_time", "alert_id"]).itertuples(index=False):
        key = row.alert_id.split("/", 1)[1]  # sensor#incident, within the train's shadow
        entry = patches.setdefault(row.device_id, {}).setdefault(key, {})
        moment = pd.Timestamp(row.event_time).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        if row.alert_action == "close":
            entry.update({"status": "closed", "closed_at": moment})
        else:
            entry.update(
                {
                    "alert_id": row.alert_id,
                    "sensor": row.sensor,
                    "status": "open",
                    "severity": row.alert_severity,
                    "event_time": moment,
                    "score": round(float(row.anomaly_score), 4),
                }
            )
    return patches


def _changes(current: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Whether `entry` would change the shadow's entry. An incident's alert id is never reused,
    so a closed alert is not reopened by an older, replayed transition."""
    if current.get("status") == "closed" and entry.get("status") == "open":
        return False
    return any(current.get(k) != v for k, v in entry.items())


def deliver(
    store: ShadowStore, thing: str, patch: dict[str, dict[str, Any]], max_conflicts: int = 10
) -> bool:
    """Merge `patch` into the train's shadow; False if the shadow already holds all of it."""
    for _ in range(max_conflicts):
        current, version = store.read(thing)
        changes = {
            key: entry for key, entry in patch.items() if _changes(current.get(key) or {}, entry)
        }
        if not changes:
            return False
        try:
            store.write(thing, changes, version)
            return True
        except VersionConflict:
            continue  # someone else wrote: read again and merge anew
    raise AlertDeliveryError(f"shadow of {thing}: {max_conflicts} version conflicts in a row")


@dataclass
class AlertStats:
    batches: int = 0
    transitions: int = 0
    updates_sent: int = 0


def foreach_batch_alerts(
    make_store: Callable[[], ShadowStore], anomalies_path: str, stats: AlertStats
) -> Callable[[Any, int], None]:
    """foreachBatch: anomalous events and transitions to the lake's anomalies table (one folder
    per batch id, overwritten on a replay), then one shadow update per train."""

    def write(batch: Any, batch_id: int) -> None:
        # Bounded: anomalous rows and transitions, not all events. One read of the lake files
        # on the driver serves the shadow updates first (the latency path) and then the table.
        rows = batch.where("is_anomaly OR alert_action IS NOT NULL").toArrow()
        frame = rows.to_pandas()
        transitions = frame[frame["alert_action"].notna()]
        store = make_store()
        for thing, patch in alert_patches(transitions).items():
            stats.updates_sent += deliver(store, thing, patch)
        if rows.num_rows:
            spark = batch.sparkSession
            spark.createDataFrame(rows.to_pandas(), schema=batch.schema).write.mode(
                "overwrite"
            ).parquet(f"{anomalies_path}/load_batch={batch_id}")
        stats.batches += 1
        stats.transitions += len(transitions)

    return write


def shadow_store_from_settings(settings: Any) -> ShadowStore:
    """The configured shadow store (`settings` is config.AlertSettings)."""
    if settings.kind == "outbox":
        return FileOutbox(Path(settings.outbox_path))
    if settings.kind == "iot":
        import boto3

        client = boto3.client(
            "iot-data", region_name=settings.region, endpoint_url=settings.endpoint_url
        )
        return IotShadowStore(client, settings.shadow_name)
    raise AlertDeliveryError("alerts.kind is none: no shadow store configured")
