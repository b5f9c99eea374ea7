"""Streaming sources. Every source yields the columns of EMR's Kinesis connector
(schemas.KINESIS_RECORD_SCHEMA; ours add subSequenceNumber), so everything downstream is the
same code whichever is configured."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession

from sensorpipe.config import SourceSettings
from sensorpipe.schemas import KINESIS_RECORD_SCHEMA
from sensorpipe.sources.replay import read_replay

EMR_CONNECTOR = "aws-kinesis"


PIN_DOCUMENT = "source-start.json"


def pin_starting_position(source: SourceSettings, checkpoint_root: str) -> SourceSettings:
    """LATEST resolved once for every query of the job: each query reading the stream would
    otherwise take "now" when it first starts, and records arriving between the two starts
    would reach one query and not the other. The first start writes the moment (whole seconds,
    UTC, to the millisecond) under the checkpoint root; later starts, and the other queries,
    read it back."""
    if source.kind == "replay" or source.starting_position != "LATEST":
        return source
    from sensorpipe.jsonstore import JsonStore

    store = JsonStore(checkpoint_root)
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    pin = {"stream_name": source.stream_name, "starting_timestamp": now}
    if not store.create(PIN_DOCUMENT, pin):
        pin = store.read(PIN_DOCUMENT) or pin
    return replace(source, starting_position="AT_TIMESTAMP",
                   starting_timestamp=pin["starting_timestamp"])  # fmt: skip


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
        if source.kind == EMR_CONNECTOR:
            # The connector takes the moment inside the option, to the second: "AT_TIMESTAMP
            # YYYY-MM-DDTHH:MM:SSZ" (awslabs/spark-sql-kinesis-connector, README,
            # kinesis.startingPosition). Rounded down: a few records before it, never fewer.
            moment = datetime.fromisoformat(source.starting_timestamp.replace("Z", "+00:00"))
            options["kinesis.startingPosition"] = (
                f"AT_TIMESTAMP {moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
            )
        else:
            options["kinesis.startingTimestamp"] = source.starting_timestamp
    return {**options, **source.options}


def read_records(spark: SparkSession, source: SourceSettings, checkpoint: str) -> DataFrame:
    """The configured source as a streaming DataFrame; `checkpoint` is the query's checkpoint,
    under which a Kinesis source keeps where each batch stopped."""
    if source.kind == "replay":
        return read_replay(
            spark, source.replay_path, source.stream_name, source.max_files_per_trigger
        )
    metadata = f"{checkpoint}/kinesis"
    if "://" not in metadata:
        # The executors write here too: a relative path would be each one's working folder.
        metadata = os.path.abspath(metadata)
    options = kinesis_reader_options(source, metadata)
    if source.kind == "kinesis":
        from sensorpipe.sources.kinesis import SHORT_NAME, KinesisDataSource

        spark.dataSource.register(KinesisDataSource)
        return spark.readStream.format(SHORT_NAME).options(**options).load()
    options.setdefault("kinesis.consumerType", "GetRecords")
    frame = spark.readStream.format(EMR_CONNECTOR).options(**options).load()
    return frame.select(*KINESIS_RECORD_SCHEMA.fieldNames())
