"""Spark glue for the detectors: per (device, sensor) state across micro-batches with
`transformWithStateInPandas` (RocksDB state store, state in the checkpoint, a time to live for
keys that go silent), and a grouped pandas UDF that scores a whole history at once for
backfills. Both feed the same core, in event-time order per key, so a key's scores do not
depend on how its sequence was cut into micro-batches, nor on which worker scored it
(anomaly/state.py has the design).

The streaming operator groups keys into buckets (`buckets`, a hash of the key): Spark's
per-group cost (Arrow to pandas and back, state-store round trips) was ~4.6 ms a key with one
group per key, several times the detector's own cost; per bucket it is paid once for many keys.

The operator runs without a time mode. Spark's own state TTL needs processing-time mode, and in
that mode Spark 4.0.2 runs a batch after every batch, data or not
(`TransformWithStateInPandasExec.shouldRunAnotherBatch` returns true for ProcessingTime:
"TODO SPARK-50180", apache/spark sql/core/.../python/TransformWithStateInPandasExec.scala):
at a 1 s trigger the scoring query was never idle, each empty batch costing what a data batch's
fixed part does (state stores loaded and committed, a Python runner per partition), and a
finite run could not use availableNow. So the time to live is the scorer's own, counted in
the records' arrival times (anomaly/state.py): deterministic on a replay, which processing time
is not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from sensorpipe.anomaly.detectors import make_detector, restore_detector
from sensorpipe.anomaly.incidents import SEVERITIES, IncidentState, advance, alert_id, explain
from sensorpipe.anomaly.resident import Resident, detector_store
from sensorpipe.anomaly.state import (
    BucketState,
    Key,
    KeyState,
    StateMismatch,
    chain_digest,
    key_phase,
    pack_chunk,
    unpack_chunk,
)
from sensorpipe.logref import identifier_ref
from sensorpipe.schemas import SCORE_FIELDS
from sensorpipe.worker_imports import install as cheap_import_cache_resets


def key_ref(key: Key, secret: bytes) -> str:
    """A key as logs name it: a keyed digest, not the device id (a hospital device's serial
    identifies its patient; logs are outside the protected zone): sensorpipe.logref."""
    return identifier_ref(secret, *key)


LOG = logging.getLogger(__name__)

KEY = ["device_id", "sensor"]
BUCKET = "_state_bucket"
SEED = 42


def scored_schema(schema: StructType) -> StructType:
    return StructType([*schema.fields, *SCORE_FIELDS])


def _transitions(devices: Any, sensors: Any, moments: Any, flagged: np.ndarray,
                 score: np.ndarray, values: np.ndarray, incident: IncidentState,
                 quiet: timedelta) -> tuple[list, list, list, np.ndarray]:  # fmt: skip
    """Incident transitions of one key's points (naive UTC datetimes), in event-time order,
    and the expected range (low, high columns) each point was judged against."""
    ids, actions, severities = [], [], []
    expected = np.empty((len(values), 2))
    for i, (device, sensor, moment, hit, s, v) in enumerate(
        zip(devices, sensors, moments, flagged, score, values.tolist(), strict=True)
    ):
        expected[i] = incident.expected_range()
        action, severity = advance(incident, device, sensor, moment, bool(hit), float(s), quiet)
        incident.learn(v, bool(hit))
        ids.append(alert_id(device, sensor, incident.number) if action else None)
        actions.append(action)
        severities.append(SEVERITIES[severity] if action else None)
    return ids, actions, severities, expected


class Scores:
    """One bucket's rows, sorted by key and time, and their score columns, filled one key's
    rows at a time and put together once (adding columns to a pandas frame per key cost about
    1 ms a key; sorting with pandas another 5 ms a bucket)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        devices = frame["device_id"].to_numpy(dtype=object)
        sensors = frame["sensor"].to_numpy(dtype=object)
        key_codes = pd.factorize(pd.Series(devices + "\x00" + sensors), sort=True)[0]
        seq_rank = pd.factorize(frame["sequence_number"], sort=True)[0]
        micros = frame[EVENT_MICROS].to_numpy(dtype=np.int64)
        order = np.lexsort((frame["sub_sequence_number"].to_numpy(), seq_rank, micros, key_codes))
        self.columns = {name: frame[name].to_numpy()[order] for name in frame.columns}
        # Arrival times (ms), the clock of the state's time to live (streaming only).
        arrivals = frame[ARRIVAL_MICROS] if ARRIVAL_MICROS in frame else frame[EVENT_MICROS]
        self.arrivals = arrivals.to_numpy(dtype=np.int64)[order] // 1000
        n = len(order)
        self.devices, self.sensors = devices[order], sensors[order]
        self.key_codes = key_codes[order]
        self.moments = micros[order].astype("datetime64[us]").tolist()  # naive UTC datetimes
        self.values = self.columns["value"].astype(np.float64)
        self.raw = np.full(n, np.nan)
        self.score = np.full(n, np.nan)
        self.flagged = np.full(n, None, dtype=object)
        self.ids: list = [None] * n
        self.actions: list = [None] * n
        self.severities: list = [None] * n
        self.expected = np.full((n, 2), np.nan)
        self.directions = np.full(n, None, dtype=object)
        self.strengths = np.full(n, np.nan)

    def key_ranges(self) -> Iterator[tuple[Key, int, int]]:
        """(key, first row, end row) of each key, in order."""
        codes = self.key_codes
        starts = np.flatnonzero(np.diff(codes)) + 1 if len(codes) else np.empty(0, int)
        bounds = [0, *starts.tolist(), len(codes)] if len(codes) else []
        for a, b in zip(bounds, bounds[1:], strict=False):
            yield (self.devices[a], self.sensors[a]), a, b

    def lives(self, a: int, b: int, last_seen_ms: int,
              ttl_ms: int | None) -> list[tuple[int, int, bool]]:  # fmt: skip
        """Rows a:b of one key cut where its readings resume more than `ttl_ms` after every
        earlier one arrived (the key went silent past its time to live): (first row, end row,
        whether the key starts afresh there). Cut by the key's own arrivals, so a silence is
        the same whether it falls between micro-batches or inside one."""
        if not ttl_ms or b == a:
            return [(a, b, False)]
        arrivals = self.arrivals[a:b]
        before = np.maximum.accumulate(np.concatenate([[last_seen_ms], arrivals[:-1]]))
        silent = arrivals - before > ttl_ms
        silent[0] &= last_seen_ms > 0  # a key without state has nothing to forget
        starts = (np.flatnonzero(silent) + a).tolist()
        bounds = [a, *starts, b]
        return [(lo, hi, lo in starts) for lo, hi in zip(bounds, bounds[1:], strict=False)
                if hi > lo]  # fmt: skip

    def score_key(self, a: int, b: int, detector: Any, points_before: int, threshold: float,
                  warmup: int, incident: IncidentState, quiet: timedelta) -> None:  # fmt: skip
        """Rows a:b (one key's new points, or a run of them) scored by its detector and
        incident state, both advanced past them."""
        raw, score = detector.update(self.values[a:b])
        # A detector still learning a series (its first `warmup` points) flags nothing.
        flagged = (score >= threshold) & (points_before + np.arange(b - a) >= warmup)
        self.raw[a:b], self.score[a:b], self.flagged[a:b] = raw, score, flagged
        ids, actions, severities, expected = _transitions(
            self.devices[a:b], self.sensors[a:b], self.moments[a:b], flagged, score,
            self.values[a:b], incident, quiet,
        )  # fmt: skip
        self.ids[a:b], self.actions[a:b], self.severities[a:b] = ids, actions, severities
        self.expected[a:b] = expected
        self.directions[a:b], self.strengths[a:b] = explain(self.values[a:b], expected, flagged)

    def scored(self, names: list[str], store_errors: int = 0) -> pd.DataFrame:
        """The rows with their scores, as columns `names`; rows of a key refused state (the
        live-key bound) stay unscored (nulls). `store_errors` goes in the first row's
        STORE_ERRORS (a sum over the rows counts each once)."""
        errors = np.zeros(len(self.values), dtype=np.int32)
        errors[:1] = store_errors
        columns = {**self.columns, STORE_ERRORS: errors, "anomaly_raw": self.raw,
                   "anomaly_score": self.score, "is_anomaly": self.flagged, "alert_id": self.ids,
                   "alert_action": self.actions, "alert_severity": self.severities,
                   "expected_low": self.expected[:, 0], "expected_high": self.expected[:, 1],
                   "anomaly_direction": self.directions,
                   "anomaly_strength": self.strengths}  # fmt: skip
        return pd.DataFrame({name: columns[name] for name in names}, copy=False)


@dataclass(frozen=True)
class ScoringSettings:
    """What the streaming scorer needs, as plain values (from AnomalySettings)."""

    detector: str
    threshold: float
    warmup: int
    ttl_ms: int | None
    quiet: timedelta = timedelta(minutes=30)
    buckets: int = 64
    # The state's shuffle partitions: buckets are labelled so each partition gets as many.
    partitions: int = 2
    snapshot_every: int = 2000
    # A key's values not yet in a snapshot are kept at most this many batches: a key that went
    # quiet is snapshotted then, so one silent key does not keep every chunk of its bucket.
    max_chunks: int = 200
    # The executor's resident detectors (anomaly/resident.py): where (tmpfs; /dev/shm if
    # null) and how many bytes at most. 0 bytes: every key restored from the state each batch.
    resident_dir: str | None = None
    resident_bytes: int = 8 << 30
    max_live_keys: int = 1_000_000
    # The key of the keyed digests logs name keys by (sensorpipe.logref.log_key).
    log_key: bytes = b""
    # Mixed into the bucket hash (bucket_salt in streaming/queries.py: made with the events
    # query's checkpoint, kept with it): with a public hash, about 3,100 crafted ids filled one
    # bucket and every new device that hashed there went unscored (issue 30). None: the
    # unkeyed hash of checkpoints made before the salt.
    bucket_salt: int | None = None

    def keys_in_bucket(self, index: int) -> int:
        """The most keys bucket `index` holds: max_live_keys split over the buckets, the
        first ones taking one more, so the buckets together hold max_live_keys at most (a
        ceiling per bucket let 128 keys in for a bound of 100 over 64 buckets)."""
        share, extra = divmod(self.max_live_keys, self.buckets)
        return share + (index < extra)


# The state variables' schemas as StructTypes: given as DDL strings, pyspark's client asks the
# JVM's SQL parser for each (a round trip per schema, five per task, every micro-batch:
# `StatefulProcessorApiClient._parse_string_schema`). The same schemas, so the same state.
_BUCKET_RECORD = StructType([StructField("record", BinaryType())])
_SNAPSHOT_KEY = StructType([StructField("device_id", StringType()),
                            StructField("sensor", StringType())])  # fmt: skip
_SNAPSHOT_VALUE = StructType([StructField("blob", BinaryType())])
_CHUNK_KEY = StructType([StructField("chunk", LongType())])
_CHUNK_VALUE = StructType([StructField("data", BinaryType())])


class BucketedDetectorProcessor(StatefulProcessor):
    """Scores the keys of one bucket: each key's detector resident in this worker if it is
    exactly the checkpoint's, otherwise restored from its snapshot and the chunks since."""

    def __init__(self, settings: ScoringSettings, columns: list[str]) -> None:
        # columns: the slim output (score_stream), in order
        self.settings, self.columns = settings, columns
        self.state_id = f"{settings.detector}/{SEED}"
        labels = bucket_labels(settings.buckets, settings.partitions)
        self.capacity = {label: settings.keys_in_bucket(i) for i, label in enumerate(labels)}
        self._cap = 0

    def init(self, handle: StatefulProcessorHandle) -> None:
        cheap_import_cache_resets()  # this worker's next tasks (worker_imports.py)
        self.store = detector_store(self.settings.resident_dir, self.settings.resident_bytes)
        # No state-store TTL (module docstring): the scorer forgets silent keys itself.
        self.bucket = handle.getValueState("bucket", _BUCKET_RECORD)
        self.snapshots = handle.getMapState("snapshots", _SNAPSHOT_KEY, _SNAPSHOT_VALUE)
        self.chunks = handle.getMapState("chunks", _CHUNK_KEY, _CHUNK_VALUE)

    def _ref(self, key: Key) -> str:
        return key_ref(key, self.settings.log_key)

    # -- restore --------------------------------------------------------------------------

    def _restore(self, key: Key, state: KeyState, bucket: BucketState,
                 loaded: dict[int, dict[Key, np.ndarray]]) -> Any:  # fmt: skip
        """The key's detector as of its record: snapshot, then the chunks after it."""
        if state.snapshot_points:
            stored = self.snapshots.getValue(key)
            if stored is None:
                raise StateMismatch(f"{self._ref(key)}: its snapshot is gone")
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
                f"{self._ref(key)}: snapshot and chunks replay to {points} points, the record has "
                f"{state.points}"
            )
        return detector

    def _detector(self, key: Key, state: KeyState, bucket: BucketState,
                  loaded: dict[int, dict[Key, np.ndarray]]
                  ) -> tuple[Any, KeyState, Resident | None]:  # fmt: skip
        """The key's detector as of its record: resident (mapped, changed in place) if the
        executor's copy is exactly that, else restored from the state store (in memory)."""
        if state.points == 0:
            return make_detector(state.detector, seed=SEED), state, None
        resident = self.store.get(self.state_id, key, state.detector, state.points, state.digest)
        if resident is not None:
            resident.begin()
            return resident.detector, state, resident
        try:
            return self._restore(key, state, bucket, loaded), state, None
        except StateMismatch as exc:
            # A checkpoint damaged or edited by hand: the key starts again rather than the
            # query failing for ever on it.
            LOG.warning("detector state of key %s restarted: %s", self._ref(key), exc)
            return make_detector(state.detector, seed=SEED), bucket.new_key(state.detector), None

    def _keep(self, key: Key, state: KeyState, detector: Any, resident: Resident | None) -> None:
        """The detector's new state back where the next batch finds it."""
        if resident is not None:
            resident.commit(state.points, state.digest)
        else:
            self.store.put(self.state_id, key, detector, state.points, state.digest,
                           state.detector)  # fmt: skip

    def _snapshot(self, key: Key, state: KeyState, detector: Any, chunk: int) -> None:
        self.snapshots.updateValue(key, (detector.to_bytes(),))
        state.snapshot_points, state.snapshot_digest = state.points, state.digest
        state.snapshot_chunk = chunk

    def _forget(self, bucket: BucketState, key: Key) -> None:
        """The key's state gone (it went silent past its time to live)."""
        state = bucket.keys.pop(key, None)
        if state is not None and state.snapshot_points:
            self.snapshots.removeKey(key)
        self.store.drop(self.state_id, key)

    # -- one bucket's batch ---------------------------------------------------------------

    def handleInputRows(
        self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any
    ) -> Iterator[pd.DataFrame]:
        scores = Scores(pd.concat(list(rows), ignore_index=True))
        store_errors_before = self.store.errors
        self._cap = self.capacity[int(key[0])]
        bucket = BucketState.from_bytes(self._bucket_record())
        chunk = bucket.next_chunk  # this batch's; keys new in it start after the chunk before
        loaded: dict[int, dict[Key, np.ndarray]] = {}
        entries = []
        ranges = list(scores.key_ranges())
        # Silent keys go first, so their room is free for new keys; a key of this batch
        # starts afresh only if its own readings resumed past the time to live (lives()).
        self._expire(bucket, int(scores.arrivals.max()), present={k for k, _, _ in ranges})
        for k, a, b in ranges:
            known = bucket.keys.get(k)
            values = None
            for lo, hi, afresh in scores.lives(a, b, known.last_seen_ms if known else 0,
                                               self.settings.ttl_ms):  # fmt: skip
                if afresh:
                    self._forget(bucket, k)
                values = self._score_run(scores, k, lo, hi, bucket, chunk, loaded)
            if values is not None:
                entries.append((k, values))
        if entries:
            self.chunks.updateValue((chunk,), (pack_chunk(entries),))
            bucket.chunks.append(chunk)
        self._snapshot_lagging(bucket, chunk, loaded)
        for old in sorted(set(bucket.chunks) - set(bucket.needed_chunks())):
            self.chunks.removeKey((old,))
        bucket.chunks = bucket.needed_chunks()
        bucket.next_chunk = chunk + 1
        self.bucket.update((bucket.to_bytes(),))
        yield scores.scored(self.columns, self.store.errors - store_errors_before)

    def _score_run(self, scores: Scores, k: Key, a: int, b: int, bucket: BucketState,
                   chunk: int, loaded: dict[int, dict[Key, np.ndarray]]
                   ) -> np.ndarray | None:  # fmt: skip
        """Rows a:b of key k scored and its state advanced past them; the values for this
        batch's chunk (None if a snapshot now holds them, or the key got no state)."""
        s = self.settings
        state = bucket.keys.get(k)
        if state is None:
            if len(bucket.keys) >= self._cap:
                return None  # the live-key bound: no state for this key, its rows unscored
            state = bucket.keys[k] = bucket.new_key(s.detector)
        detector, state, resident = self._detector(k, state, bucket, loaded)
        try:
            bucket.keys[k] = state
            incident = state.incident
            before = state.points
            scores.score_key(a, b, detector, before, s.threshold, s.warmup, incident, s.quiet)
            values = scores.values[a:b]
            state.points = before + len(values)
            state.digest = chain_digest(state.digest, values)
            state.last_seen_ms = max(state.last_seen_ms, int(scores.arrivals[a:b].max()))
            state.keep_incident(incident)
            kept: np.ndarray | None = values
            if state.snapshot_due(before, s.snapshot_every, key_phase(k, s.snapshot_every)):
                self._snapshot(k, state, detector, chunk)
                kept = None
            self._keep(k, state, detector, resident)
            return kept
        finally:
            detector = None
            if resident is not None:
                resident.close()

    def _bucket_record(self) -> bytes | None:
        stored = self.bucket.get()
        return bytes(stored[0]) if stored is not None else None

    def _expire(self, bucket: BucketState, now_ms: int, present: set[Key]) -> None:
        """Keys of the bucket not in this batch and silent past their time to live by
        `now_ms` (the batch's latest arrival) lose their state. A bucket none of whose keys
        report keeps its record until one does: bounded by `max_live_keys`."""
        ttl = self.settings.ttl_ms
        if not ttl:
            return
        for k, state in list(bucket.keys.items()):
            if k not in present and now_ms - state.last_seen_ms > ttl:
                self._forget(bucket, k)

    def _snapshot_lagging(self, bucket: BucketState, chunk: int,
                          loaded: dict[int, dict[Key, np.ndarray]]) -> None:  # fmt: skip
        """Keys whose values are spread over more than `max_chunks` chunks get a snapshot."""
        for k, state in list(bucket.keys.items()):
            lagging = chunk - state.snapshot_chunk > self.settings.max_chunks
            if not (lagging and state.points > state.snapshot_points):
                continue
            detector, state, resident = self._detector(k, state, bucket, loaded)
            try:
                bucket.keys[k] = state
                if state.points:
                    self._snapshot(k, state, detector, chunk)
                    self._keep(k, state, detector, resident)
            finally:
                detector = None
                if resident is not None:
                    resident.close()

    def close(self) -> None:
        pass


def _spark_hash_int(value: int, seed: int = 42) -> int:
    """Spark's `hash()` of an int (Murmur3_x86_32.hashInt), which its hash partitioning uses."""

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF

    k1 = rotl((value & 0xFFFFFFFF) * 0xCC9E2D51 & 0xFFFFFFFF, 15) * 0x1B873593 & 0xFFFFFFFF
    h1 = (rotl(seed ^ k1, 13) * 5 + 0xE6546B64) & 0xFFFFFFFF
    h1 ^= 4
    h1 = (h1 ^ (h1 >> 16)) * 0x85EBCA6B & 0xFFFFFFFF
    h1 = (h1 ^ (h1 >> 13)) * 0xC2B2AE35 & 0xFFFFFFFF
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 >= 1 << 31 else h1


def bucket_labels(buckets: int, partitions: int) -> list[int]:
    """A label per bucket such that Spark's hash partitioning sends bucket i to partition
    i mod `partitions`: every partition gets the same number of buckets (hashing the bucket
    numbers themselves left one partition 40% more keys than the other at 2,000 keys)."""
    labels: list[int] = []
    candidate = 0
    free: dict[int, list[int]] = {p: [] for p in range(partitions)}
    for i in range(buckets):
        want = i % partitions
        while not free[want]:
            free[_spark_hash_int(candidate) % partitions].append(candidate)
            candidate += 1
        labels.append(free[want].pop(0))
    return labels


def bucket_index(buckets: int, salt: int | None) -> Column:
    """Each event's bucket, 0 .. buckets - 1: a hash of its key, keyed by `salt`."""
    hashed = F.xxhash64(*KEY) if salt is None else F.xxhash64(F.lit(salt), *KEY)
    return F.pmod(hashed, F.lit(buckets)).cast("int")


def bucket_column(buckets: int, partitions: int, salt: int | None) -> Column:
    """Each event's bucket label (bucket_labels: an even spread over the partitions)."""
    labels = F.array(*[F.lit(b) for b in bucket_labels(buckets, partitions)])
    return F.element_at(labels, bucket_index(buckets, salt) + 1)


EVENT_MICROS = "_event_micros"
ARRIVAL_MICROS = "_arrival_micros"
PACKED = "_packed"
# Resident-store operations of the batch that failed and fell back to the checkpoint (a full
# tmpfs, a damaged file): observed by the events query, published as ResidentStoreErrors.
STORE_ERRORS = "_store_errors"
# What the scorer reads of an event; the other columns cross packed in one JSON string, and
# times as integers (each column, and each timestamp most, costs Python time per group).
SCORER_COLUMNS = ["device_id", "sensor", "value", "sequence_number", "sub_sequence_number"]
_JSON = {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX", "dateFormat": "yyyy-MM-dd"}


def score_stream(
    events: DataFrame, settings: ScoringSettings, observe_as: str | None = None
) -> DataFrame:
    """Streaming: add the scores, is_anomaly and incident transitions to every event. With
    `observe_as`, each micro-batch observes under that name the readings left unscored (the
    live-key bound) and the resident-store errors (`store_errors`)."""
    schema = scored_schema(events.schema)
    passed = StructType([f for f in events.schema.fields
                         if f.name not in (*SCORER_COLUMNS, "event_time")])  # fmt: skip
    slim = events.select(
        *SCORER_COLUMNS,
        F.unix_micros("event_time").alias(EVENT_MICROS),
        # The time-to-live clock: Kinesis's arrival time (event time where a source has none).
        F.unix_micros(F.coalesce("arrival_time", "event_time")).alias(ARRIVAL_MICROS),
        F.to_json(F.struct(*passed.fieldNames()), _JSON).alias(PACKED),
        bucket_column(settings.buckets, settings.partitions, settings.bucket_salt).alias(BUCKET),
    )
    out = StructType([
        *[slim.schema[c] for c in (*SCORER_COLUMNS, EVENT_MICROS, PACKED)], *SCORE_FIELDS,
        StructField(STORE_ERRORS, IntegerType()),
    ])  # fmt: skip
    processor = BucketedDetectorProcessor(settings, out.fieldNames())
    scored = slim.groupBy(BUCKET).transformWithStateInPandas(
        statefulProcessor=processor,
        outputStructType=out,
        outputMode="Append",
        timeMode="None",  # no processing-time mode: it runs a batch after every batch
    )
    if observe_as is not None:
        scored = scored.observe(
            observe_as,
            F.count_if(F.col("is_anomaly").isNull()).alias("unscored"),
            F.coalesce(F.sum(STORE_ERRORS), F.lit(0)).cast("long").alias("store_errors"),
        )
    unpacked = F.from_json(PACKED, passed, _JSON)
    columns = {
        "event_time": F.timestamp_micros(EVENT_MICROS),
        **{f.name: unpacked[f.name] for f in passed.fields},
    }
    return scored.select(*[columns.get(f.name, F.col(f.name)).alias(f.name)
                           for f in schema.fields])  # fmt: skip


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
        cheap_import_cache_resets()
        moments = frame["event_time"].to_numpy(dtype="datetime64[us]")
        scores = Scores(frame.assign(**{EVENT_MICROS: moments.astype(np.int64)}))
        scores.score_key(0, len(frame), make_detector(detector, seed=SEED), 0, threshold, warmup,
                         IncidentState(), quiet)  # fmt: skip
        return scores.scored(schema.fieldNames())

    return events.groupBy(*KEY).applyInPandas(score_group, schema)
