"""Aggregates of event values: per (device, sensor) and tumbling window in the stream, per day
in the rollup; the same statistics, computed by the same expressions, in both.

Percentiles are Spark's `percentile_approx` with `accuracy` (default 10000): its rank error is at
most n / accuracy, so for windows of fewer than `accuracy` events the result is an exact order
statistic of the window (the smallest value whose rank reaches p * n).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

DEFAULT_ACCURACY = 10000


def _anomaly_columns(events: DataFrame) -> tuple[Column, Column]:
    """Anomaly flag and score if the events were scored, else none flagged and no score."""
    flag = F.col("is_anomaly") if "is_anomaly" in events.columns else F.lit(False)
    score = (
        F.col("anomaly_score") if "anomaly_score" in events.columns else F.lit(None).cast("double")
    )
    return flag, score


def value_statistics(events: DataFrame, accuracy: int) -> list[Column]:
    flag, score = _anomaly_columns(events)
    quantiles = F.percentile_approx("value", [0.5, 0.95], accuracy)
    # Sums in DECIMAL are exact, so they do not depend on the order Spark adds rows in: a
    # re-run of a day or a replayed batch writes the same bits, not a different last digit.
    x = F.col("value").cast(_EXACT)
    return [
        F.count(F.lit(1)).alias("event_count"),
        F.min("value").alias("min_value"),
        F.max("value").alias("max_value"),
        F.sum(x).alias("_sum"),
        F.sum(x * x).alias("_sum_squares"),
        quantiles.alias("_quantiles"),
        F.count_if(flag).alias("anomaly_count"),
        F.max(score).alias("max_anomaly_score"),
    ]


_EXACT = "decimal(20,8)"


def _finish(frame: DataFrame) -> DataFrame:
    """Mean and sample standard deviation from the exact sums; quantiles split out."""
    n, total, squares = F.col("event_count"), F.col("_sum"), F.col("_sum_squares")
    variance = F.when(n > 1, (squares - total * total / n) / (n - 1))
    return (
        frame.withColumn("sum_value", total.cast("double"))
        .withColumn("mean_value", (total / n).cast("double"))
        .withColumn("stddev_value", F.sqrt(F.greatest(variance.cast("double"), F.lit(0.0))))
        .withColumn("p50_value", F.col("_quantiles")[0])
        .withColumn("p95_value", F.col("_quantiles")[1])
        .drop("_quantiles", "_sum", "_sum_squares")
    )


def window_aggregates(
    events: DataFrame, window: str, watermark: str, accuracy: int = DEFAULT_ACCURACY
) -> DataFrame:
    """Tumbling-window statistics per (device, sensor); with a watermark, so a stream's state
    for old windows is dropped (events later than it still land in the raw lake)."""
    grouped = (
        events.withWatermark("event_time", watermark)
        .groupBy("device_id", "sensor", F.window("event_time", window).alias("w"))
        .agg(*value_statistics(events, accuracy))
    )
    return _finish(
        grouped.withColumn("window_start", F.col("w.start"))
        .withColumn("window_end", F.col("w.end"))
        .drop("w")
    )


def daily_aggregates(events: DataFrame, accuracy: int = DEFAULT_ACCURACY) -> DataFrame:
    """Statistics per (device, sensor, event_date), for the daily rollup."""
    return _finish(
        events.groupBy("device_id", "sensor", "event_date").agg(*value_statistics(events, accuracy))
    )
