"""The fast path: a scoring batch's transitions delivered as soon as the batch commits, from the
files the lake's sink log lists for it (continuous runs)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import pandas as pd

from sensorpipe.sinks.alerts.delivery import AlertStats, alert_patches, deliver
from sensorpipe.sinks.alerts.incidents_table import INCIDENT_SOURCE_COLUMNS, IncidentLoader
from sensorpipe.sinks.alerts.stores import ShadowStore
from sensorpipe.sinks.sink_log import batch_files, sink_log_of

LOG = logging.getLogger(__name__)

TRANSITION_COLUMNS = INCIDENT_SOURCE_COLUMNS


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
    runs), to the shadows and, with `incidents`, to the warehouse's incidents table.
    Registered as a StreamingQueryListener; the work runs on its own thread so the listener
    bus is never blocked."""

    def __init__(
        self,
        query_name: str,
        events_path: str,
        make_store: Callable[[], ShadowStore],
        stats: AlertStats,
        incidents: IncidentLoader | None = None,
    ) -> None:
        from sensorpipe.listener import ProgressListener

        self.query_name, self.stats, self._make_store = query_name, stats, make_store
        self.incidents = incidents
        self._sink_log = sink_log_of(events_path)
        self._batches: queue.Queue[tuple[int, int] | None] = queue.Queue()
        fast_path = self

        class Listener(ProgressListener):
            def onQueryProgress(self, event: Any) -> None:
                progress = event.progress
                if progress.name == fast_path.query_name and progress.numInputRows:
                    started = pd.Timestamp(progress.timestamp).value // 1_000_000
                    fast_path._batches.put((progress.batchId, started))

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
                    if self.incidents is not None:
                        self.incidents.load(transitions, batch_id)
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
