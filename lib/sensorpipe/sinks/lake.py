"""The lake: raw events and quarantine as Hive-partitioned Parquet (or Delta on EMR).

Streaming writes go through Spark's file sink (or Delta's), exactly-once through the query's
checkpoint and the sink's own log: a batch re-run after a failure replaces nothing and adds
nothing twice, and readers see only committed files.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery
from pyspark.sql.types import StructType

AVAILABLE_NOW = "available_now"


def start_lake_query(
    frame: DataFrame,
    *,
    path: str,
    checkpoint: str,
    partition_by: Sequence[str],
    table_format: str,
    query_name: str,
    trigger: str,
    sink_log_retention: str | None = None,
) -> StreamingQuery:
    """Start appending a streaming DataFrame to a partitioned lake table. With a retention,
    the file sink's log (compacted every few batches) drops files committed longer ago."""
    writer = (
        frame.writeStream.format(table_format)
        .queryName(query_name)
        .outputMode("append")
        .partitionBy(*partition_by)
        .option("checkpointLocation", checkpoint)
    )
    if sink_log_retention and table_format == "parquet":
        writer = writer.option("retention", sink_log_retention)
    return with_trigger(writer, trigger).start(path)


def with_trigger(writer: DataStreamWriter, trigger: str) -> DataStreamWriter:
    """The configured trigger: a processing-time interval, or availableNow for a finite run."""
    if trigger != AVAILABLE_NOW:
        return writer.trigger(processingTime=trigger)
    return writer.trigger(availableNow=True)


def read_table(spark: SparkSession, path: str, table_format: str, schema: StructType) -> DataFrame:
    """A lake table as every batch reader sees it: its committed rows only. Delta reads its
    transaction log; Parquet written by the streaming file sink reads the sink's log
    (`_spark_metadata`) when given the table's root, so a file a failed batch left behind is
    not read. The schema is given because an empty table has no file to infer it from."""
    reader = spark.read.format(table_format)
    if table_format == "parquet":
        reader = reader.schema(schema)
    return reader.load(path)


COMPACTED_MARKERS = "_compacted"


def compacted_days(compacted_path: str | None) -> list[str]:
    """The days the compaction job finished (its marker, written after the day's files)."""
    if not compacted_path:
        return []
    from sensorpipe.jsonstore import JsonStore

    names = JsonStore(compacted_path).children(COMPACTED_MARKERS)
    return sorted(n[len("event_date=") : -len(".json")] for n in names
                  if n.startswith("event_date=") and n.endswith(".json"))  # fmt: skip


def mark_compacted(compacted_path: str, day: str, detail: dict) -> None:
    from sensorpipe.jsonstore import JsonStore

    JsonStore(compacted_path).write(f"{COMPACTED_MARKERS}/event_date={day}.json", detail)


def read_events(
    spark: SparkSession, events_path: str, table_format: str, schema: StructType,
    compacted_path: str | None,
) -> DataFrame:  # fmt: skip
    """The events table as batch readers see it: each compacted day from the compacted table,
    every other day from the raw table's committed files. The raw table's sink log forgets
    files after its retention; by then their day has been compacted."""
    raw = read_table(spark, events_path, table_format, schema)
    days = compacted_days(compacted_path)
    if not days:
        return raw
    from pyspark.sql import functions as F

    compacted = spark.read.schema(schema).parquet(compacted_path)
    done = F.col("event_date").cast("string").isin(days)
    return raw.where(~done).unionByName(compacted.where(done))


def stream_table(
    spark: SparkSession, path: str, table_format: str, schema: StructType, max_files: int
) -> DataFrame:
    """A lake table as a stream of its committed files (the same log as `read_table`)."""
    reader = spark.readStream.format(table_format).option("maxFilesPerTrigger", max_files)
    if table_format == "parquet":
        reader = reader.schema(schema)
    return reader.load(path)


def committed_files(
    spark: SparkSession, path: str, table_format: str, schema: StructType
) -> set[str]:
    """The data files a reader of the table sees now (committed by the sink's log)."""
    try:
        return set(read_table(spark, path, table_format, schema).inputFiles())
    except AnalysisException as exc:
        if exc.getCondition() in (
            "PATH_NOT_FOUND",
            "DELTA_MISSING_DELTA_TABLE",
            "DELTA_TABLE_NOT_FOUND",
        ):
            return set()
        raise


def partitions_of(files: set[str]) -> set[str]:
    """Hive partition directories (key=value/...) of the given data files."""
    parts = set()
    for f in files:
        dirs = [p for p in f.split("/")[:-1] if "=" in p]
        parts.add("/".join(dirs))
    return parts
