"""Streaming sources. Every source yields exactly the columns of EMR's Kinesis connector
(schemas.KINESIS_RECORD_SCHEMA), so everything downstream is the same code."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from sensorpipe.config import SourceSettings
from sensorpipe.sources.replay import read_replay


def read_records(spark: SparkSession, source: SourceSettings) -> DataFrame:
    """The configured source as a streaming DataFrame of Kinesis connector columns."""
    if source.kind == "replay":
        return read_replay(
            spark, source.replay_path, source.stream_name, source.max_files_per_trigger
        )
    raise ValueError(f"source.kind {source.kind!r} has no reader")  # config validation forbids
