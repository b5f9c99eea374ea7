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
    one_batch: bool = False,
) -> StreamingQuery:
    """Start appending a streaming DataFrame to a partitioned lake table."""
    writer = (
        frame.writeStream.format(table_format)
        .queryName(query_name)
        .outputMode("append")
        .partitionBy(*partition_by)
        .option("checkpointLocation", checkpoint)
    )
    return with_trigger(writer, trigger, one_batch).start(path)


def with_trigger(
    writer: DataStreamWriter, trigger: str, one_batch: bool = False
) -> DataStreamWriter:
    """The configured trigger. A finite run is availableNow, or, for a query whose stateful
    operator keeps processing-time state TTL (transformWithStateInPandas), one batch: under
    availableNow such an operator asks for no-data batches without end."""
    if trigger != AVAILABLE_NOW:
        return writer.trigger(processingTime=trigger)
    if one_batch:
        return writer.trigger(once=True)
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
