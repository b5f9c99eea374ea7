"""Alerts to the train: incident transitions -> the desired state of its AWS IoT device shadow.

A train that loses the network in a tunnel reads its shadow again when it reconnects and gets
the latest state, so one update per train per micro-batch carries its open alerts under
`state.desired.sensorpipe_alerts.<alert id>`: sensor, event time, score, severity, status.
Only those fields are written (the shadow merges partial documents), so other writers' fields
are never overwritten. Each update carries the version read; on a version conflict the shadow
is read again and the patch merged anew. Entries the shadow already holds are not sent again,
so a replayed batch (same alert ids, same documents) sends nothing. Throttling backs off.

Locally (`alerts.kind: outbox`) the shadow is a JSON file per train with the same semantics.

Two paths deliver. The alerts query (`foreach_batch_alerts`) reads the lake's committed
events with its own checkpoint: at least once, it also writes the anomalies table. In
continuous runs, `AlertFastPath` also delivers a scoring batch's transitions as soon as that
batch commits, from the files the lake's sink log lists for it, saving the alerts query's
trigger and batch. Delivery is idempotent, so whichever path comes second sends nothing; a
failure of the fast path only delays an alert to the query's delivery.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
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


LOG = logging.getLogger(__name__)
# Both delivery paths run in the driver process; one at a time per process keeps a file
# outbox's read-check-write whole (the IoT shadow's version check covers other writers).
_DELIVERY_LOCK = threading.Lock()


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
    with _DELIVERY_LOCK:
        return _deliver(store, thing, patch, max_conflicts)


def _deliver(
    store: ShadowStore, thing: str, patch: dict[str, dict[str, Any]], max_conflicts: int
) -> bool:
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
    fast_path_updates: int = 0  # of updates_sent, those the fast path sent first
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_update(self, fast_path: bool = False) -> None:
        with self._lock:  # two delivery paths, two threads
            self.updates_sent += 1
            self.fast_path_updates += fast_path


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
            if deliver(store, thing, patch):
                stats.add_update()
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


TRANSITION_COLUMNS = [
    "device_id", "sensor", "event_time", "anomaly_score", "alert_id", "alert_action",
    "alert_severity",
]  # fmt: skip


def batch_files(sink_log: Any, batch_id: int, started_ms: int) -> list[str]:
    """The data files a file-sink batch added, from the sink's log (`_spark_metadata`): the
    batch's own file, or a compaction file whose entries written since the batch started."""
    for name in (str(batch_id), f"{batch_id}.compact"):
        text = sink_log.text(name)
        if text is not None:
            entries = [json.loads(line) for line in text.splitlines()[1:] if line.strip()]
            return [
                e["path"]
                for e in entries
                if e.get("action") == "add"
                and (name.isdigit() or e["modificationTime"] >= started_ms)
            ]
    return []


def transitions_in(files: list[str]) -> pd.DataFrame:
    """The incident transitions in some lake files (Parquet, local or s3://)."""
    import pyarrow.parquet as pq

    frames = []
    for path in files:
        table = pq.read_table(path, columns=TRANSITION_COLUMNS)
        frame = table.to_pandas()
        frames.append(frame[frame["alert_action"].notna()])
    return (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TRANSITION_COLUMNS)
    )


class AlertFastPath:
    """Delivers each scoring batch's transitions right after the batch commits (continuous
    runs). Registered as a StreamingQueryListener; the work runs on its own thread so the
    listener bus is never blocked."""

    def __init__(
        self,
        query_name: str,
        events_path: str,
        make_store: Callable[[], ShadowStore],
        stats: AlertStats,
    ) -> None:
        from pyspark.sql.streaming import StreamingQueryListener

        from sensorpipe.jsonstore import JsonStore

        self.query_name, self.stats, self._make_store = query_name, stats, make_store
        self._sink_log = JsonStore(f"{events_path.rstrip('/')}/_spark_metadata")
        self._batches: queue.Queue[tuple[int, int] | None] = queue.Queue()
        fast_path = self

        class Listener(StreamingQueryListener):
            def onQueryStarted(self, event: Any) -> None:
                pass

            def onQueryProgress(self, event: Any) -> None:
                progress = event.progress
                if progress.name == fast_path.query_name and progress.numInputRows:
                    started = pd.Timestamp(progress.timestamp).value // 1_000_000
                    fast_path._batches.put((progress.batchId, started))

            def onQueryIdle(self, event: Any) -> None:
                pass

            def onQueryTerminated(self, event: Any) -> None:
                pass

        self.listener = Listener()
        self._thread = threading.Thread(target=self._run, name="alert-fast-path", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        store = None
        while (item := self._batches.get()) is not None:
            batch_id, started_ms = item
            try:
                transitions = transitions_in(batch_files(self._sink_log, batch_id, started_ms))
                if not transitions.empty:
                    store = store or self._make_store()
                    for thing, patch in alert_patches(transitions).items():
                        if deliver(store, thing, patch):
                            self.stats.add_update(fast_path=True)
            except Exception:  # noqa: BLE001 - the alerts query delivers what this misses
                LOG.warning("alert fast path: batch %s left to the alerts query", batch_id,
                            exc_info=True)  # fmt: skip
            finally:
                self._batches.task_done()
        self._batches.task_done()

    def drain(self) -> None:
        """Wait until every batch reported so far has been handled."""
        self._batches.join()

    def attach(self, spark: Any) -> None:
        self._spark = spark
        spark.streams.addListener(self.listener)

    def stop(self) -> None:
        if getattr(self, "_spark", None) is not None:
            self._spark.streams.removeListener(self.listener)
            self._spark = None
        self._batches.put(None)
        self._thread.join(timeout=30)
