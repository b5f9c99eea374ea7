"""Streaming sources. Every source yields the columns of EMR's Kinesis connector
(schemas.KINESIS_RECORD_SCHEMA; ours add subSequenceNumber), so everything downstream is the
same code whichever is configured."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from sensorpipe.config import SourceSettings
from sensorpipe.schemas import KINESIS_RECORD_SCHEMA
from sensorpipe.sources.replay import read_replay

EMR_CONNECTOR = "aws-kinesis"


def kinesis_reader_options(source: SourceSettings, metadata_path: str) -> dict[str, str]:
    """Reader options, named as EMR's connector names them where it has them."""
    options = {
        "kinesis.streamName": source.stream_name,
        "kinesis.region": source.region,
        "kinesis.startingPosition": source.starting_position,
        "kinesis.maxFetchRecordsPerShard": str(source.max_fetch_records_per_shard),
        "kinesis.metadataPath": metadata_path,
    }
    if source.endpoint_url:
        options["kinesis.endpointUrl"] = source.endpoint_url
    if source.starting_timestamp:
        options["kinesis.startingTimestamp"] = source.starting_timestamp
    return {**options, **source.options}


def read_records(spark: SparkSession, source: SourceSettings, checkpoint: str) -> DataFrame:
    """The configured source as a streaming DataFrame; `checkpoint` is the query's checkpoint,
    under which a Kinesis source keeps where each batch stopped."""
    if source.kind == "replay":
        return read_replay(
            spark, source.replay_path, source.stream_name, source.max_files_per_trigger
        )
    options = kinesis_reader_options(source, f"{checkpoint}/kinesis")
    if source.kind == "kinesis":
        from sensorpipe.sources.kinesis import SHORT_NAME, KinesisDataSource

        spark.dataSource.register(KinesisDataSource)
        return spark.readStream.format(SHORT_NAME).options(**options).load()
    options.setdefault("kinesis.consumerType", "GetRecords")
    frame = spark.readStream.format(EMR_CONNECTOR).options(**options).load()
    return frame.select(*KINESIS_RECORD_SCHEMA.fieldNames())
