"""Spark glue for the detectors: per (device, sensor) state across micro-batches with
`transformWithStateInPandas` (RocksDB state store, state in the checkpoint, TTL for keys that go
silent), and a grouped pandas UDF that scores a whole history at once for backfills. Both feed
the same core, in event-time order per key, so a key's scores do not depend on how its sequence
was cut into micro-batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle
from pyspark.sql.types import StructType

from sensorpipe.anomaly.detectors import make_detector, restore_detector
from sensorpipe.anomaly.incidents import SEVERITIES, IncidentState, advance, alert_id
from sensorpipe.schemas import SCORE_FIELDS

KEY = ["device_id", "sensor"]
ORDER = ["event_time", "sequence_number", "sub_sequence_number"]
_STATE_SCHEMA = "detector STRING, points LONG, blob BINARY"
_INCIDENT_SCHEMA = "open BOOLEAN, number LONG, severity INT, last_anomaly TIMESTAMP"


def scored_schema(schema: StructType) -> StructType:
    return StructType([*schema.fields, *SCORE_FIELDS])


def _score(
    frame: pd.DataFrame,
    detector: Any,
    points_before: int,
    threshold: float,
    warmup: int,
    incident: IncidentState,
    quiet: timedelta,
) -> pd.DataFrame:
    frame = frame.sort_values(ORDER, kind="stable").reset_index(drop=True)
    raw, score = detector.update(frame["value"].to_numpy(dtype=np.float64))
    index = points_before + np.arange(len(frame))
    frame["anomaly_raw"] = raw
    frame["anomaly_score"] = score
    # A detector still learning a series (its first `warmup` points) flags nothing.
    frame["is_anomaly"] = (score >= threshold) & (index >= warmup)
    ids, actions, severities = [], [], []
    for device, sensor, moment, flagged, value in zip(
        frame["device_id"],
        frame["sensor"],
        frame["event_time"],
        frame["is_anomaly"],
        frame["anomaly_score"],
        strict=True,
    ):
        action, severity = advance(
            incident, device, sensor, moment.to_pydatetime(), bool(flagged), float(value), quiet
        )
        ids.append(alert_id(device, sensor, incident.number) if action else None)
        actions.append(action)
        severities.append(SEVERITIES[severity] if action else None)
    frame["alert_id"], frame["alert_action"], frame["alert_severity"] = ids, actions, severities
    return frame


class DetectorProcessor(StatefulProcessor):
    """Scores each key's new events with that key's detector, restored from and saved to state."""

    def __init__(
        self,
        detector: str,
        threshold: float,
        warmup: int,
        ttl_ms: int | None,
        columns: list[str],
        quiet: timedelta,
        seed: int = 42,
    ) -> None:
        self.detector, self.threshold, self.warmup, self.quiet = detector, threshold, warmup, quiet
        self.ttl_ms, self.columns, self.seed = ttl_ms, columns, seed

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.state = handle.getValueState("detector", _STATE_SCHEMA, self.ttl_ms)
        self.incident = handle.getValueState("incident", _INCIDENT_SCHEMA, self.ttl_ms)

    def handleInputRows(
        self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any
    ) -> Iterator[pd.DataFrame]:
        frame = pd.concat(list(rows), ignore_index=True)
        if self.state.exists():
            name, points, blob = self.state.get()
            detector = restore_detector(name, bytes(blob))
        else:
            name, points = self.detector, 0
            detector = make_detector(name, seed=self.seed)
        incident = (
            IncidentState(*self.incident.get()) if self.incident.exists() else IncidentState()
        )
        scored = _score(frame, detector, points, self.threshold, self.warmup, incident, self.quiet)
        self.state.update((name, points + len(scored), detector.to_bytes()))
        self.incident.update(incident.as_tuple())
        yield scored[self.columns]

    def close(self) -> None:
        pass


def score_stream(
    events: DataFrame,
    detector: str,
    threshold: float,
    warmup: int,
    ttl_ms: int | None,
    quiet: timedelta = timedelta(minutes=30),
) -> DataFrame:
    """Streaming: add the scores, is_anomaly and incident transitions to every event."""
    schema = scored_schema(events.schema)
    processor = DetectorProcessor(detector, threshold, warmup, ttl_ms, schema.fieldNames(), quiet)
    return events.groupBy(*KEY).transformWithStateInPandas(
        statefulProcessor=processor,
        outputStructType=schema,
        outputMode="Append",
        # State TTL counts processing time, so it needs that time mode.
        timeMode="ProcessingTime" if ttl_ms else "None",
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
        scored = _score(
            frame, make_detector(detector), 0, threshold, warmup, IncidentState(), quiet
        )
        return scored[schema.fieldNames()]

    return events.groupBy(*KEY).applyInPandas(score_group, schema)
