"""Compaction: one day of the events table rewritten as one file per (day, hour).

The streaming file sink writes a few files per partition per micro-batch; a day of them is
thousands of small objects for the data scientists' queries. The compacted copy is a separate
table (`lake.compacted_path`): the raw table stays exactly what the stream committed, and a
re-run replaces only that day's partitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sensorpipe.config import ConfigError, Settings
from sensorpipe.schemas import SCORED_EVENT_SCHEMA
from sensorpipe.sinks.lake import read_table


def one_day_by_hour(events: DataFrame, day: date) -> DataFrame:
    """The day's events, one partition per hour (so one file per hour when written)."""
    return events.where(F.col("event_date") == F.lit(day)).repartition("event_hour")


@dataclass
class CompactionResult:
    day: date
    source: str
    target: str
    rows: int


def run_compaction(
    spark: SparkSession, settings: Settings, day: date, source: str | None = None
) -> CompactionResult:
    target = settings.lake.compacted_path
    if not target:
        raise ConfigError("lake.compacted_path: required by the compaction job")
    # The raw table by default (its commit log decides which files count); on EMR, the HDFS
    # copy S3DistCp made of the table. Either is read as every reader reads the lake.
    source = source or settings.lake.events_path
    events = read_table(spark, source, settings.lake.format, SCORED_EVENT_SCHEMA)
    day_events = one_day_by_hour(events, day).persist()
    try:
        rows = day_events.count()
        day_events.write.mode("overwrite").option("partitionOverwriteMode", "dynamic").partitionBy(
            "event_date", "event_hour"
        ).parquet(target)
    finally:
        day_events.unpersist()
    return CompactionResult(day, source, target, rows)
