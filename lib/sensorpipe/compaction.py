"""Compaction: one day of the events table rewritten as one file per (day, hour).

The streaming file sink writes a few files per partition per micro-batch; a day of them is
thousands of small objects for the data scientists' queries. The compacted copy is a separate
table (`lake.compacted_path`): the raw table stays exactly what the stream committed, and a
re-run replaces only that day's partitions.

Only committed rows are compacted: the raw table is read through its sink log, and on EMR the
HDFS copy is made by S3DistCp from a manifest of the day's committed files
(`write_committed_manifest`, S3DistCp's --srcPrefixesFile), never from a listing that would
include the files of a failed micro-batch. A day is compacted only once its late-data horizon
has passed: events up to `decode.max_event_lag_hours` late still land in it; later ones are
quarantined, so after that the day no longer changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sensorpipe.catalog import add_partitions, register_table
from sensorpipe.config import ConfigError, Settings
from sensorpipe.jsonstore import JsonStore
from sensorpipe.schemas import SCORED_EVENT_SCHEMA
from sensorpipe.sinks.lake import committed_files, mark_compacted, read_table
from sensorpipe.streaming.queries import EVENTS_PARTITIONS


class CompactionError(RuntimeError):
    """The day cannot be compacted yet, or its input is not what was committed."""


def late_data_horizon(day: date, settings: Settings) -> datetime:
    """When the day's partition stops changing: the end of the day (UTC) plus the lateness
    the decoder still accepts."""
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)
    return end + timedelta(hours=settings.decode.max_event_lag_hours)


def check_horizon(day: date, settings: Settings, now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    horizon = late_data_horizon(day, settings)
    if now < horizon:
        raise CompactionError(
            f"{day} can be compacted from {horizon:%Y-%m-%dT%H:%MZ} (its late-data horizon: "
            f"decode.max_event_lag_hours={settings.decode.max_event_lag_hours}); events for it "
            "may still arrive"
        )


def committed_day_files(spark: SparkSession, settings: Settings, day: date) -> list[str]:
    """The day's data files the events table's sink log committed."""
    lake = settings.lake
    marker = f"/event_date={day.isoformat()}/"
    files = committed_files(spark, lake.events_path, lake.format, SCORED_EVENT_SCHEMA)
    return sorted(f for f in files if marker in f)


def write_committed_manifest(
    spark: SparkSession, settings: Settings, day: date, target: str, now: datetime | None = None
) -> int:
    """The day's committed files, one URI per line, for S3DistCp's --srcPrefixesFile."""
    check_horizon(day, settings, now)
    files = committed_day_files(spark, settings, day)
    folder, _, name = target.rstrip("/").rpartition("/")
    JsonStore(folder).write_text(name, "".join(f"{f}\n" for f in files))
    return len(files)


def one_day_by_hour(events: DataFrame, day: date) -> DataFrame:
    """The day's events, one partition per hour (so one file per hour when written)."""
    return events.where(F.col("event_date") == F.lit(day)).repartition("event_hour")


def _check_copy(events: DataFrame, committed: list[str], source: str, day: date) -> None:
    """A copy of the table (S3DistCp's) must hold only files the sink log committed."""
    names = {f.rsplit("/", 1)[-1] for f in committed}
    marker = f"/event_date={day.isoformat()}/"
    copied = {f.rsplit("/", 1)[-1] for f in events.inputFiles() if marker in f}
    extra = sorted(copied - names)
    if extra:
        raise CompactionError(
            f"{source} holds {len(extra)} file(s) of {day} the sink log never committed "
            f"(e.g. {extra[0]}): copy it from the committed-files manifest"
        )


@dataclass
class CompactionResult:
    day: date
    source: str
    target: str
    rows: int


def run_compaction(
    spark: SparkSession,
    settings: Settings,
    day: date,
    source: str | None = None,
    now: datetime | None = None,
) -> CompactionResult:
    target = settings.lake.compacted_path
    if not target:
        raise ConfigError("lake.compacted_path: required by the compaction job")
    check_horizon(day, settings, now)
    # The raw table by default (its commit log decides which files count); on EMR, the HDFS
    # copy S3DistCp made of the table. Either is read as every reader reads the lake.
    source = source or settings.lake.events_path
    events = read_table(spark, source, settings.lake.format, SCORED_EVENT_SCHEMA)
    if source.rstrip("/") != settings.lake.events_path.rstrip("/"):
        _check_copy(events, committed_day_files(spark, settings, day), source, day)
    day_events = one_day_by_hour(events, day).persist()
    try:
        rows = day_events.count()
        if rows == 0:
            # Marked compacted, an empty day would hide the raw table's rows from every
            # reader; a day past the sink log's retention is no longer listed there at all.
            raise CompactionError(
                f"{source} lists no committed events of {day} (none arrived, or the day is "
                "past the sink log's retention: lake.sink_log_retention)"
            )
        day_events.write.mode("overwrite").option("partitionOverwriteMode", "dynamic").partitionBy(
            *EVENTS_PARTITIONS
        ).parquet(target)
        hours = [r.event_hour for r in day_events.select("event_hour").distinct().collect()]
    finally:
        day_events.unpersist()
    # The day's commit: readers take the day from the compacted table from now on.
    mark_compacted(target, day.isoformat(), {"rows": rows, "hours": sorted(hours),
                                             "source": source})  # fmt: skip
    catalog = settings.catalog
    register_table(spark, catalog, settings.lake_database, "compacted_events", target,
                   SCORED_EVENT_SCHEMA, EVENTS_PARTITIONS)  # fmt: skip
    add_partitions(spark, catalog, settings.lake_database, "compacted_events",
                   [{"event_date": day.isoformat(), "event_hour": h} for h in hours])  # fmt: skip
    return CompactionResult(day, source, target, rows)
