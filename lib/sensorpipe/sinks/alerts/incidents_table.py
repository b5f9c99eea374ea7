"""The warehouse's `incidents` table: every incident transition of the trains, loaded by the
alerts path in the micro-batch that updates the shadows, so that operators see in the
warehouse (and on `sensorpipe view`) what the trains are told.

Both delivery paths load the transitions they deliver: the fast path as a scoring batch
commits, the alerts query for its own batch. Rows are keyed by the transition (alert id,
action, event time) and merged, so whichever loads second, or a replayed batch, changes
nothing; each load is one transaction with its load-log entry (sinks/warehouse.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from sensorpipe.sinks.warehouse import INCIDENTS, Warehouse

# What a transition row brings from the lake's scored events.
INCIDENT_SOURCE_COLUMNS = [
    "device_id", "sensor", "event_time", "anomaly_score", "alert_id", "alert_action",
    "alert_severity", "value", "expected_low", "expected_high", "anomaly_direction",
    "anomaly_strength", "arrival_time",
]  # fmt: skip


def opened_at(alert_ids: pd.Series) -> pd.Series:
    """When each incident opened, from its id (`<device>/<sensor>#20261101T081000Z`)."""
    stamps = alert_ids.str.rsplit("#", n=1).str[-1]
    return pd.to_datetime(stamps, format="%Y%m%dT%H%M%SZ")


def incident_rows(transitions: pd.DataFrame) -> pa.Table:
    """The `incidents` rows of some transitions (rows with an alert action)."""
    frame = pd.DataFrame(
        {
            "alert_id": transitions["alert_id"].astype(str),
            "action": transitions["alert_action"].astype(str),
            "event_time": pd.to_datetime(transitions["event_time"]),
            "device_id": transitions["device_id"].astype(str),
            "sensor": transitions["sensor"].astype(str),
            "severity": transitions["alert_severity"].astype(str),
            "opened_at": opened_at(transitions["alert_id"].astype(str)),
            "score": transitions["anomaly_score"].astype(float),
            "value": transitions["value"].astype(float),
            "expected_low": transitions["expected_low"].astype(float),
            "expected_high": transitions["expected_high"].astype(float),
            "direction": transitions["anomaly_direction"].astype(object),
            "strength": transitions["anomaly_strength"].astype(float),
            "arrival_time": pd.to_datetime(transitions["arrival_time"]),
        }
    )
    # One row per key even if a batch (or two files of one) repeat a transition.
    frame = frame.drop_duplicates(["alert_id", "action", "event_time"], keep="last")
    return pa.Table.from_pandas(frame, preserve_index=False)


@dataclass
class IncidentLoader:
    """Loads transitions into `incidents`; `log_name` names the caller in the load log
    (called at the first load: a query's checkpoint id exists only once it has started)."""

    make_warehouse: Callable[[], Warehouse]
    log_name: Callable[[], str]
    rows: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def load(self, transitions: pd.DataFrame, batch_id: int) -> None:
        if transitions.empty:
            return
        rows = incident_rows(transitions)
        self.make_warehouse().upsert(INCIDENTS, rows, self.log_name(), batch_id)
        with self._lock:
            self.rows += rows.num_rows
