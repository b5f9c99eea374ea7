"""The job's progress listeners read each report through its JSON, not pyspark's field-by-field
conversion (sensorpipe/listener.py: about 120 ms of the driver's CPU a report, against 1 ms)."""

from __future__ import annotations

import io
import threading

from pyspark.sql import functions as F
from pyspark.sql.streaming.listener import StreamingQueryProgress
from sensorpipe.listener import ProgressListener
from sensorpipe.metrics import commit_lag_listener
from sensorpipe.streaming.queries import DECODE_METRICS
from sensorpipe.streaming.summary import progress_printer


class Recorded:
    def __init__(self) -> None:
        self.values: list[tuple[str, float]] = []

    def put(self, name: str, value: float, unit: str) -> None:
        self.values.append((name, value))


def test_the_jobs_listeners_get_every_field_without_pyspark_s_conversion(spark, tmp_path,
                                                                         monkeypatch):  # fmt: skip
    converted = []
    original = StreamingQueryProgress.fromJObject.__func__

    def counting(cls, jprogress):  # noqa: ANN001
        converted.append(1)
        return original(cls, jprogress)

    monkeypatch.setattr(StreamingQueryProgress, "fromJObject", classmethod(counting))
    seen, done = [], threading.Event()

    class Seen(ProgressListener):
        def onQueryProgress(self, event):  # noqa: ANN001
            seen.append(event.progress)
            done.set()

    printed, metrics = io.StringIO(), Recorded()
    # The bus calls them in turn: the one that signals is last.
    listeners = [progress_printer("listener_test", out=printed),
                 commit_lag_listener(metrics, "listener_test"), Seen()]  # fmt: skip
    source = tmp_path / "in"
    spark.range(5).write.parquet(str(source / "a"))
    for listener in listeners:
        spark.streams.addListener(listener)
    try:
        counts = {"records_in": F.count(F.lit(1)), "valid": F.sum(F.when(F.col("id") > 0, 1))}
        query = (
            spark.readStream.schema("id long").parquet(str(source / "*"))
            .observe(DECODE_METRICS, *[c.alias(n) for n, c in counts.items()])
            .writeStream.queryName("listener_test").format("noop")
            .option("checkpointLocation", str(tmp_path / "cp")).trigger(availableNow=True).start()
        )  # fmt: skip
        query.awaitTermination(120)
        assert done.wait(60), "no progress event arrived"
    finally:
        for listener in listeners:
            spark.streams.removeListener(listener)
    progress = seen[0]
    assert (progress.name, progress.batchId, progress.numInputRows) == ("listener_test", 0, 5)
    assert progress.observedMetrics[DECODE_METRICS].asDict() == {"records_in": 5, "valid": 4}
    assert "addBatch" in progress.durationMs
    assert "batch 0: 5 records read, 4 valid, 1 quarantined" in printed.getvalue()
    assert [name for name, _ in metrics.values] == ["LakeCommitLagSeconds"]
    assert converted == [], "a listener converted a progress report field by field"
