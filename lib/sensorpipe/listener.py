"""Streaming progress on the driver, read as one JSON document per progress report.

PySpark 4.0.2 hands a Python StreamingQueryListener each progress event converted field by
field over py4j (`StreamingQueryProgress.fromJObject`, pyspark/sql/streaming/listener.py):
some thirty round trips, and for every observed metric a lookup of `PythonSQLUtils` by its
short name, which py4j resolves by trying to load the class from each imported package,
scanning every jar on the class path for each miss: 85 ms of the driver's CPU a report with
one observed metric, against 0.64 ms through its JSON (benchmarks/progress_events.py, median
of 3 rounds). Every listener gets every query's events, so the job's four listeners paid it
about twelve times a micro-batch round, on the driver's cores (JFR on the scorer alone at 20
keys: the listener thread 36% of the JVM's samples, nearly all in
`URLClassPath.getResource`). The progress's own `json()` is one call, parsed by pyspark's
`fromJson` (what `StreamingQuery.recentProgress` and Spark Connect already use): the same
fields, observed metrics as Rows.
"""

from __future__ import annotations

import json
from typing import Any

from pyspark.sql.streaming import StreamingQueryListener
from pyspark.sql.streaming.listener import (
    JStreamingQueryListener,
    QueryProgressEvent,
    StreamingQueryProgress,
)


def progress_of(jprogress: Any) -> StreamingQueryProgress:
    """A JVM StreamingQueryProgress as pyspark's, from its JSON (one py4j call)."""
    return StreamingQueryProgress.fromJson(json.loads(jprogress.json()))


class _JsonEvents(JStreamingQueryListener):
    """The JVM's side of a ProgressListener: progress events through their JSON."""

    def onQueryProgress(self, jevent: Any) -> None:
        self.pylistener.onQueryProgress(QueryProgressEvent(progress_of(jevent.progress())))


class ProgressListener(StreamingQueryListener):
    """A StreamingQueryListener whose progress events cross from the JVM as JSON (module
    docstring); registered and removed with `spark.streams` as any other. The other events
    (start, idle, termination) are rare and small: pyspark's own conversion."""

    @property
    def _jlistener(self) -> Any:
        # pyspark's StreamingQueryListener._jlistener, with the JSON adapter inside.
        from pyspark import SparkContext

        if not hasattr(self, "_jlistenerobj"):
            jvm = SparkContext._jvm
            assert jvm is not None, "no SparkContext"
            self._jlistenerobj = jvm.PythonStreamingQueryListenerWrapper(_JsonEvents(self))
        return self._jlistenerobj

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        pass

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass
