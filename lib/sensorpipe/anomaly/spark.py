"""Spark glue for the detectors: per (device, sensor) state across micro-batches with
`transformWithStateInPandas` (RocksDB state store, state in the checkpoint, TTL for keys that go
silent), and a grouped pandas UDF that scores a whole history at once for backfills. Both feed
the same core, in event-time order per key, so a key's scores do not depend on how its sequence
was cut into micro-batches, nor on which worker scored it (anomaly/state.py has the design).

The streaming operator groups keys into buckets (`buckets`, a hash of the key): Spark's
per-group cost (Arrow to pandas and back, state-store round trips) was ~4.6 ms a key with one
group per key, several times the detector's own cost; per bucket it is paid once for many keys.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle
from pyspark.sql.types import StructType

from sensorpipe.anomaly.detectors import make_detector, restore_detector
from sensorpipe.anomaly.incidents import SEVERITIES, IncidentState, advance, alert_id
from sensorpipe.anomaly.state import (
    RESIDENT,
    BucketState,
    Key,
    KeyState,
    StateMismatch,
    chain_digest,
    key_phase,
    pack_chunk,
    unpack_chunk,
)
from sensorpipe.schemas import SCORE_FIELDS

LOG = logging.getLogger(__name__)

KEY = ["device_id", "sensor"]
ORDER = ["event_time", "sequence_number", "sub_sequence_number"]
BUCKET = "_state_bucket"
SEED = 42


def scored_schema(schema: StructType) -> StructType:
    return StructType([f for f in schema.fields if f.name != BUCKET] + SCORE_FIELDS)


def _transitions(frame: pd.DataFrame, flagged: np.ndarray, score: np.ndarray,
                 incident: IncidentState, quiet: timedelta) -> tuple[list, list, list]:  # fmt: skip
    """Incident transitions of one key's points, in order (frame sorted by event time)."""
    ids, actions, severities = [], [], []
    for device, sensor, moment, hit, value in zip(
        frame["device_id"], frame["sensor"], frame["event_time"], flagged, score, strict=True
    ):
        action, severity = advance(
            incident, device, sensor, moment.to_pydatetime(), bool(hit), float(value), quiet
        )
        ids.append(alert_id(device, sensor, incident.number) if action else None)
        actions.append(action)
        severities.append(SEVERITIES[severity] if action else None)
    return ids, actions, severities


def score_key(
    frame: pd.DataFrame, detector: Any, points_before: int, threshold: float, warmup: int,
    incident: IncidentState, quiet: timedelta,
) -> pd.DataFrame:  # fmt: skip
    """One key's new points (sorted by `ORDER`), scored by its detector and incident state,
    both advanced past them."""
    raw, score = detector.update(frame["value"].to_numpy(dtype=np.float64))
    index = points_before + np.arange(len(frame))
    # A detector still learning a series (its first `warmup` points) flags nothing.
    flagged = (score >= threshold) & (index >= warmup)
    ids, actions, severities = _transitions(frame, flagged, score, incident, quiet)
    return frame.assign(anomaly_raw=raw, anomaly_score=score, is_anomaly=flagged, alert_id=ids,
                        alert_action=actions, alert_severity=severities)  # fmt: skip


def unscored(frame: pd.DataFrame) -> pd.DataFrame:
    """Points of a key refused state (the live-key bound): in the lake, not scored."""
    none = [None] * len(frame)
    return frame.assign(anomaly_raw=np.nan, anomaly_score=np.nan, is_anomaly=none,
                        alert_id=none, alert_action=none, alert_severity=none)  # fmt: skip


@dataclass(frozen=True)
class ScoringSettings:
    """What the streaming scorer needs, as plain values (from AnomalySettings)."""

    detector: str
    threshold: float
    warmup: int
    ttl_ms: int | None
    quiet: timedelta = timedelta(minutes=30)
    buckets: int = 64
    snapshot_every: int = 2000
    # A key's values not yet in a snapshot are kept at most this many batches: a key that went
    # quiet is snapshotted then, so one silent key does not keep every chunk of its bucket.
    max_chunks: int = 200
    resident_bytes: int = 4 << 30
    max_live_keys: int = 1_000_000

    @property
    def keys_per_bucket(self) -> int:
        return math.ceil(self.max_live_keys / self.buckets)


class BucketedDetectorProcessor(StatefulProcessor):
    """Scores the keys of one bucket: each key's detector resident in this worker if it is
    exactly the checkpoint's, otherwise restored from its snapshot and the chunks since."""

    def __init__(self, settings: ScoringSettings, columns: list[str]) -> None:
        self.settings, self.columns = settings, columns
        self.state_id = f"{settings.detector}/{SEED}"

    def init(self, handle: StatefulProcessorHandle) -> None:
        ttl = self.settings.ttl_ms
        self.bucket = handle.getValueState("bucket", "record BINARY", ttl)
        self.snapshots = handle.getMapState("snapshots", "device_id STRING, sensor STRING",
                                            "blob BINARY", ttl)  # fmt: skip
        self.chunks = handle.getMapState("chunks", "chunk LONG", "data BINARY", ttl)

    # -- restore --------------------------------------------------------------------------

    def _restore(self, key: Key, state: KeyState, bucket: BucketState,
                 loaded: dict[int, dict[Key, np.ndarray]]) -> Any:  # fmt: skip
        """The key's detector as of its record: snapshot, then the chunks after it."""
        if state.snapshot_points:
            stored = self.snapshots.getValue(key)
            if stored is None:
                raise StateMismatch(f"{key}: its snapshot is gone (state TTL?)")
            detector = restore_detector(state.detector, bytes(stored[0]))
        else:
            detector = make_detector(state.detector, seed=SEED)
        points, digest = state.snapshot_points, state.snapshot_digest
        for chunk in bucket.chunks:
            if chunk <= state.snapshot_chunk:
                continue
            if chunk not in loaded:
                stored = self.chunks.getValue((chunk,))
                loaded[chunk] = unpack_chunk(bytes(stored[0])) if stored is not None else {}
            values = loaded[chunk].get(key)
            if values is not None and len(values):
                detector.update(values)
                points, digest = points + len(values), chain_digest(digest, values)
        if (points, digest) != (state.points, state.digest):
            raise StateMismatch(
                f"{key}: snapshot and chunks replay to {points} points, the record has "
                f"{state.points}"
            )
        return detector

    def _detector(self, key: Key, state: KeyState, bucket: BucketState,
                  loaded: dict[int, dict[Key, np.ndarray]]) -> tuple[Any, KeyState]:  # fmt: skip
        if state.points == 0:
            return make_detector(state.detector, seed=SEED), state
        # Taken out while in use: a task that fails half way leaves no stale entry behind.
        detector = RESIDENT.get(self.state_id, key, state.points, state.digest)
        if detector is not None:
            RESIDENT.drop(self.state_id, key)
            return detector, state
        try:
            return self._restore(key, state, bucket, loaded), state
        except StateMismatch as exc:
            # Only a partly expired key gets here (its snapshot outlived by its record): it
            # starts again, as a key silent longer than the TTL does.
            LOG.warning("detector state of %s restarted: %s", key, exc)
            fresh = KeyState(state.detector)
            return make_detector(state.detector, seed=SEED), fresh

    def _snapshot(self, key: Key, state: KeyState, detector: Any, chunk: int, now: int) -> None:
        self.snapshots.updateValue(key, (detector.to_bytes(),))
        state.snapshot_points, state.snapshot_digest = state.points, state.digest
        state.snapshot_chunk, state.snapshot_ms = chunk, now

    # -- one bucket's batch ---------------------------------------------------------------

    def handleInputRows(
        self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any
    ) -> Iterator[pd.DataFrame]:
        s = self.settings
        frame = pd.concat(list(rows), ignore_index=True)
        frame = frame.sort_values([*KEY, *ORDER], kind="stable").reset_index(drop=True)
        now = max(0, int(timerValues.getCurrentProcessingTimeInMs()))
        bucket = BucketState.from_bytes(self._bucket_record())
        self._expire(bucket, now)
        chunk = bucket.next_chunk
        bucket.next_chunk += 1
        refresh = s.ttl_ms // 4 if s.ttl_ms else None
        loaded: dict[int, dict[Key, np.ndarray]] = {}
        entries, out = [], []
        keys = list(zip(frame["device_id"], frame["sensor"], strict=True))
        starts = [0] + [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]] + [len(keys)]
        for a, b in zip(starts, starts[1:], strict=False):
            k: Key = keys[a]
            part = frame.iloc[a:b]
            state = bucket.keys.get(k)
            if state is None:
                if len(bucket.keys) >= s.keys_per_bucket:
                    out.append(unscored(part))  # the live-key bound: no state for this key
                    continue
                state = bucket.keys[k] = KeyState(s.detector, snapshot_ms=now)
            detector, state = self._detector(k, state, bucket, loaded)
            bucket.keys[k] = state
            incident = state.incident
            before = state.points
            scored = score_key(part, detector, before, s.threshold, s.warmup, incident, s.quiet)
            out.append(scored)
            values = part["value"].to_numpy(dtype=np.float64)
            state.points, state.digest = before + len(values), chain_digest(state.digest, values)
            state.last_seen_ms = now
            state.keep_incident(incident)
            if state.snapshot_due(before, s.snapshot_every, key_phase(k, s.snapshot_every),
                                  now, refresh):  # fmt: skip
                self._snapshot(k, state, detector, chunk, now)
            else:
                entries.append((k, values))
            RESIDENT.put(self.state_id, k, state.points, state.digest, detector,
                         s.resident_bytes)  # fmt: skip
        if entries:
            self.chunks.updateValue((chunk,), (pack_chunk(entries),))
            bucket.chunks.append(chunk)
        self._snapshot_lagging(bucket, chunk, now, loaded)
        for old in sorted(set(bucket.chunks) - set(bucket.needed_chunks())):
            self.chunks.removeKey((old,))
        bucket.chunks = bucket.needed_chunks()
        self.bucket.update((bucket.to_bytes(),))
        yield pd.concat(out, ignore_index=True)[self.columns]

    def _bucket_record(self) -> bytes | None:
        stored = self.bucket.get()
        return bytes(stored[0]) if stored is not None else None

    def _expire(self, bucket: BucketState, now: int) -> None:
        """Keys silent longer than the TTL lose their state (the bucket's record outlives them
        while its other keys report)."""
        ttl = self.settings.ttl_ms
        if not ttl or not now:
            return
        for k, state in list(bucket.keys.items()):
            if state.last_seen_ms and now - state.last_seen_ms > ttl:
                if state.snapshot_points:
                    self.snapshots.removeKey(k)
                del bucket.keys[k]
                RESIDENT.drop(self.state_id, k)

    def _snapshot_lagging(self, bucket: BucketState, chunk: int, now: int,
                          loaded: dict[int, dict[Key, np.ndarray]]) -> None:  # fmt: skip
        """Keys whose values are spread over more than `max_chunks` chunks get a snapshot."""
        for k, state in bucket.keys.items():
            if state.points > state.snapshot_points and chunk - state.snapshot_chunk > (
                self.settings.max_chunks
            ):
                detector, state = self._detector(k, state, bucket, loaded)
                bucket.keys[k] = state
                if state.points:
                    self._snapshot(k, state, detector, chunk, now)
                    RESIDENT.put(self.state_id, k, state.points, state.digest, detector,
                                 self.settings.resident_bytes)  # fmt: skip

    def close(self) -> None:
        pass


def score_stream(events: DataFrame, settings: ScoringSettings) -> DataFrame:
    """Streaming: add the scores, is_anomaly and incident transitions to every event."""
    schema = scored_schema(events.schema)
    bucketed = events.withColumn(
        BUCKET, F.pmod(F.xxhash64(*KEY), F.lit(settings.buckets)).cast("int")
    )
    processor = BucketedDetectorProcessor(settings, schema.fieldNames())
    return bucketed.groupBy(BUCKET).transformWithStateInPandas(
        statefulProcessor=processor,
        outputStructType=schema,
        outputMode="Append",
        # State TTL counts processing time, so it needs that time mode.
        timeMode="ProcessingTime" if settings.ttl_ms else "None",
    )


def score_batch(
    events: DataFrame,
    detector: str,
    threshold: float,
    warmup: int,
    quiet: timedelta = timedelta(minutes=30),
) -> DataFrame:
    """Backfill: each key's whole history through a fresh detector (grouped pandas UDF); the
    same scores the stream gives for the same sequence."""
    schema = scored_schema(events.schema)

    def score_group(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.sort_values(ORDER, kind="stable").reset_index(drop=True)
        scored = score_key(frame, make_detector(detector, seed=SEED), 0, threshold, warmup,
                           IncidentState(), quiet)  # fmt: skip
        return scored[schema.fieldNames()]

    return events.groupBy(*KEY).applyInPandas(score_group, schema)
