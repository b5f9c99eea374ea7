"""Replay of recorded Kinesis records (the bundled samples) as a stream.

Spark's file source does the bookkeeping: each file is read once, tracked in the query's
checkpoint, so a replay is exactly-once like a Kinesis read. Files are JSON lines (gzip or not)
written by `sensorpipe samples`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sensorpipe.schemas import KINESIS_SOURCE_SCHEMA, REPLAY_RECORD_SCHEMA


def replay_payload(text: Column, text_base64: Column) -> Column:
    """The record's original bytes: base64 where they were not UTF-8, else the text."""
    return F.coalesce(F.unbase64(text_base64), F.encode(text, "UTF-8"))


def as_kinesis_records(replayed: DataFrame, stream_name: str) -> DataFrame:
    """Replay file rows -> the Kinesis source's columns (each record is a plain one)."""
    return replayed.select(
        replay_payload(F.col("data"), F.col("dataBase64")).alias("data"),
        F.lit(stream_name).alias("streamName"),
        "partitionKey",
        "sequenceNumber",
        "approximateArrivalTimestamp",
        F.lit(0).cast("long").alias("subSequenceNumber"),
    ).select(*KINESIS_SOURCE_SCHEMA.fieldNames())


def read_replay(
    spark: SparkSession, path: str, stream_name: str, max_files_per_trigger: int
) -> DataFrame:
    stream = (
        spark.readStream.schema(REPLAY_RECORD_SCHEMA)
        .option("maxFilesPerTrigger", max_files_per_trigger)
        .option("mode", "FAILFAST")  # a replay file is ours: a broken line is a bug, not data
        .json(path)
    )
    return as_kinesis_records(stream, stream_name)
