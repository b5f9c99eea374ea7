"""The detectors' Spark glue: streaming state across micro-batches, and the batch scorer."""

import os
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sensorpipe.anomaly.spark import ScoringSettings, score_batch, score_stream
from sensorpipe.schemas import EVENT_SCHEMA


def series_frame(points: int = 700) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    start = datetime(2026, 11, 1)
    rows = []
    for device, offset in (("train-01", 0.0), ("train-02", 3.0)):
        values = 40 + offset + 5 * np.sin(np.arange(points) / 30) + rng.normal(0, 0.3, points)
        values[500] += 30  # a spike
        for i, v in enumerate(values):
            t = start + timedelta(minutes=i)
            rows.append(
                {
                    "device_id": device,
                    "sensor": "axle_bearing_temp",
                    "event_time": t,
                    "value": float(v),
                    "unit": "degC",
                    "stream_name": "s",
                    "partition_key": device,
                    "sequence_number": f"{i:08d}",
                    "sub_sequence_number": 0,
                    "arrival_time": t,
                    "event_date": t.date(),
                    "event_hour": t.hour,
                }
            )
    return pd.DataFrame(rows)


def stream_scores(
    spark, tmp_path, frame, batches: int, detector: str, restart_after: int | None = None,
    **scoring,
) -> pd.DataFrame:  # fmt: skip
    """The frame's two keys cut into `batches` micro-batches (one file each) and scored by the
    streaming scorer; with `restart_after`, the query stops after that many batches and a new
    query resumes from the checkpoint."""
    name = f"{batches}-{restart_after}-{'-'.join(f'{k}{v}' for k, v in scoring.items())}"
    source = tmp_path / f"in-{name}"
    source.mkdir()
    chunks = np.array_split(np.arange(len(frame) // 2), batches)
    half = len(frame) // 2

    def write_file(k: int) -> None:
        part = pd.concat([frame.iloc[chunks[k]], frame.iloc[chunks[k] + half]])
        path = source / f"part-{k:03d}.parquet"
        part.astype({"event_hour": "int32"}).to_parquet(path, coerce_timestamps="us")
        os.utime(path, (1_700_000_000 + k, 1_700_000_000 + k))  # the file source's order

    settings = ScoringSettings(detector, threshold=0.5, warmup=50, ttl_ms=None, **scoring)
    out = tmp_path / f"out-{name}"
    runs = [range(batches)] if restart_after is None else [range(restart_after),
                                                           range(restart_after, batches)]
    for files in runs:
        for k in files:
            write_file(k)
        stream = spark.readStream.schema(EVENT_SCHEMA).option("maxFilesPerTrigger", 1).parquet(
            str(source)
        )
        query = (
            score_stream(stream, settings)
            .writeStream.format("parquet")
            .option("checkpointLocation", str(tmp_path / f"ck-{name}"))
            .trigger(availableNow=True)
            .start(str(out))
        )
        try:
            query.awaitTermination()
            assert sum(1 for p in query.recentProgress if p.numInputRows) == len(files)
        finally:
            query.stop()
    result = spark.read.parquet(str(out)).toPandas()
    return result.sort_values(["device_id", "event_time"]).reset_index(drop=True)


@pytest.mark.parametrize("detector", ["likelihood", "rcf"])
def test_scores_do_not_depend_on_how_the_stream_is_cut(spark, tmp_path, detector):
    """1, 3 and 17 micro-batches; a restart from the checkpoint in the middle; and no resident
    detector (every batch restores each key from its snapshot, taken every 37 points, and the
    chunks since: a worker that never saw the key): the same scores, bit for bit."""
    frame = series_frame()
    results = [stream_scores(spark, tmp_path, frame, n, detector) for n in (1, 3, 17)]
    results.append(stream_scores(spark, tmp_path, frame, 17, detector, restart_after=8))
    results.append(stream_scores(spark, tmp_path, frame, 17, detector, restart_after=9,
                                 snapshot_every=37, resident_bytes=0))  # fmt: skip
    for other in results[1:]:
        np.testing.assert_array_equal(results[0]["anomaly_score"], other["anomaly_score"])
        np.testing.assert_array_equal(results[0]["is_anomaly"], other["is_anomaly"])
    # The batch scorer (backfill) gives the same scores for the same sequence.
    backfill = score_batch(spark.createDataFrame(frame, EVENT_SCHEMA), detector, 0.5, 50)
    backfill = backfill.toPandas().sort_values(["device_id", "event_time"]).reset_index(drop=True)
    np.testing.assert_array_equal(results[0]["anomaly_score"], backfill["anomaly_score"])
    flagged = results[0][results[0]["is_anomaly"]]
    spike = flagged["event_time"] == datetime(2026, 11, 1) + timedelta(minutes=500)
    assert spike.sum() == 2, "the spike is flagged on both trains"
