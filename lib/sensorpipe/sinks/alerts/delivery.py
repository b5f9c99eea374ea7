"""Delivery: incident transitions -> one shadow patch per train, merged under the version read
(a conflict reads again), sent only where the shadow lacks it; the alerts query's foreachBatch."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pandas as pd

from sensorpipe.jsonstore import JsonStore
from sensorpipe.sinks.alerts.stores import (
    AlertDeliveryError,
    PermanentDeliveryError,
    ShadowStore,
    VersionConflict,
)
from sensorpipe.sinks.sink_log import checkpoint_query_id

# Both delivery paths run in the driver process; one at a time per process keeps a file
# outbox's read-check-write whole (the IoT shadow's version check covers other writers).
_DELIVERY_LOCK = threading.Lock()


def explanation(row: Any) -> dict[str, Any]:
    """What the train is told of how its sensor is anomalous: the direction, the range the
    detector took as normal at that reading, and the strength (anomaly/incidents.py, explain);
    nothing of it while the key has no range yet."""
    direction = getattr(row, "anomaly_direction", None)
    if not isinstance(direction, str):
        return {}
    return {"direction": direction, "expected_low": round(float(row.expected_low), 4),
            "expected_high": round(float(row.expected_high), 4),
            "strength": round(float(row.anomaly_strength), 2)}  # fmt: skip


def alert_patches(transitions: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """Per train, the alert entries these transitions set (the last transition of an alert in
    the batch wins). Rows: device_id, sensor, event_time, anomaly_score, alert_id,
    alert_action, alert_severity, and the explanation's columns where the rows have them."""
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
                    **explanation(row),
                }
            )
    return patches


def _changes(current: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Whether `entry` would change the shadow's entry. An incident's alert id is never reused,
    so a closed alert is not reopened by an older, replayed transition; and an open or
    escalated entry older than the shadow's (the two delivery paths, a replay) does not
    overwrite a newer one, such as a critical severity with an earlier warning."""
    if current.get("status") == "closed" and entry.get("status") == "open":
        return False
    if current.get("status") == entry.get("status") == "open" and current.get(
        "event_time", ""
    ) > entry.get("event_time", ""):
        return False  # ISO-8601 UTC times of one format: their text order is time order
    return any(current.get(k) != v for k, v in entry.items())


def deliver(
    store: ShadowStore, thing: str, patch: dict[str, dict[str, Any]], max_conflicts: int = 10
) -> bool:
    """Merge `patch` into the train's shadow; False if the shadow already holds all of it."""
    with _DELIVERY_LOCK:
        return _deliver(store, thing, patch, max_conflicts)


def _opened_at(key: str) -> str | None:
    """The opening time in an alert key (sensor#20261101T081000Z) as ISO-8601, if it has one."""
    stamp = key.rsplit("#", 1)[-1]
    if len(stamp) != 16 or stamp[8] != "T" or not stamp.endswith("Z"):
        return None
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}"


def _horizon(current: dict[str, Any], patch: dict[str, dict[str, Any]], hours: int) -> str:
    """The event time before which closed alerts leave the shadow: `hours` before the newest
    time the shadow and the patch know (ISO-8601 text, comparable as text)."""
    times = [
        t for entry in (*current.values(), *patch.values()) if isinstance(entry, dict)
        for t in (entry.get("event_time"), entry.get("closed_at")) if t
    ]  # fmt: skip
    if not times:
        return ""
    newest = pd.Timestamp(max(times)).tz_localize(None)
    return (newest - pd.Timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S")


def _deliver(
    store: ShadowStore, thing: str, patch: dict[str, dict[str, Any]], max_conflicts: int
) -> bool:
    hours = getattr(store, "closed_retention_hours", 24)
    for _ in range(max_conflicts):
        current, version = store.read(thing)
        horizon = _horizon(current, patch, hours)
        changes: dict[str, Any] = {
            key: entry
            for key, entry in patch.items()
            if _changes(current.get(key) or {}, entry)
            # An alert that opened before the horizon and is no longer on the shadow was
            # removed after it closed: a replay must not bring it back.
            and (key in current or (_opened_at(key) or horizon) >= horizon)
        }
        expired = {
            key: None
            for key, entry in current.items()
            if key not in changes and isinstance(entry, dict)
            and entry.get("status") == "closed" and entry.get("closed_at", "") < horizon
        }  # fmt: skip
        if not changes and not expired:
            return False
        try:
            store.write(thing, {**changes, **expired}, version)
            return True
        except VersionConflict:
            continue  # someone else wrote: read again and merge anew
    raise AlertDeliveryError(f"shadow of {thing}: {max_conflicts} version conflicts in a row")


@dataclass
class AlertStats:
    batches: int = 0
    transitions: int = 0
    updates_sent: int = 0
    fast_path_updates: int = 0  # of updates_sent, those the fast path sent first
    dead_letters: int = 0  # trains' updates the shadow refused for good
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_update(self, fast_path: bool = False) -> None:
        with self._lock:  # two delivery paths, two threads
            self.updates_sent += 1
            self.fast_path_updates += fast_path


def deliver_batch(
    store: ShadowStore,
    patches: dict[str, dict[str, dict[str, Any]]],
    dead_letters: JsonStore,
    folder: str,
    batch_id: int,
    stats: AlertStats,
    on_dead_letter: Callable[[], None] | None = None,
) -> None:
    """One update per train. A train whose update the shadow refuses for good is written to
    the dead letters (`<anomalies>/_dead_letters/<batch folder>/<train>.json`, with the reason and
    the update) and counted; the other trains are served and the batch succeeds. Throttling
    and outages still fail the batch, which is re-run."""
    for thing, patch in patches.items():
        try:
            if deliver(store, thing, patch):
                stats.add_update()
        except PermanentDeliveryError as exc:
            dead_letters.write(
                f"{folder}/{quote(thing, safe='')}.json",
                {"thing": thing, "batch_id": batch_id, "error": str(exc), "update": patch},
            )
            with stats._lock:
                stats.dead_letters += 1
            if on_dead_letter is not None:
                on_dead_letter()


def foreach_batch_alerts(
    make_store: Callable[[], ShadowStore] | None,
    anomalies_path: str,
    stats: AlertStats,
    on_dead_letter: Callable[[], None] | None = None,
    checkpoint: str | None = None,
    load_incidents: Callable[[pd.DataFrame, int], None] | None = None,
) -> Callable[[Any, int], None]:
    """foreachBatch: anomalous events and transitions to the lake's anomalies table (one folder
    per batch, overwritten on a replay), then one shadow update per device (none without
    `make_store`: alerts.kind table), and the transitions to the warehouse's incidents table
    (`load_incidents`, where the run has a warehouse). A batch's folder is
    named by the query's checkpoint id and the batch id: a new checkpoint restarts batch ids at
    0 and must not overwrite what the old one wrote."""
    ids: list[str] = []

    def batch_folder(batch_id: int) -> str:
        if checkpoint is not None and not ids:
            ids.append(checkpoint_query_id(checkpoint))
        return f"query_id={ids[0]}/load_batch={batch_id}" if ids else f"load_batch={batch_id}"

    def write(batch: Any, batch_id: int) -> None:
        # Bounded: anomalous rows and transitions, not all events. One read of the lake files
        # on the driver serves the shadow updates first (the latency path) and then the table.
        rows = batch.where("is_anomaly OR alert_action IS NOT NULL").toArrow()
        frame = rows.to_pandas()
        transitions = frame[frame["alert_action"].notna()]
        folder = batch_folder(batch_id)
        if make_store is not None:
            dead_letters = JsonStore(f"{anomalies_path}/_dead_letters")
            deliver_batch(
                make_store(), alert_patches(transitions), dead_letters, folder, batch_id, stats,
                on_dead_letter,
            )  # fmt: skip
        if load_incidents is not None:
            load_incidents(transitions, batch_id)
        if rows.num_rows:
            spark = batch.sparkSession
            spark.createDataFrame(rows.to_pandas(), schema=batch.schema).write.mode(
                "overwrite"
            ).parquet(f"{anomalies_path}/{folder}")
        stats.batches += 1
        stats.transitions += len(transitions)

    return write
