"""Query construction: one builder per query of the streaming job (events, quarantine,
aggregates, alerts, joint), each taking plain values; `run.py` decides which run and wires them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from sensorpipe.aggregates import window_aggregates
from sensorpipe.anomaly.detectors import detector_spec
from sensorpipe.anomaly.joint_spark import score_joint_stream
from sensorpipe.anomaly.spark import ScoringSettings, score_stream
from sensorpipe.config import AnomalySettings, DecodeSettings, SourceSettings
from sensorpipe.decode import REASONS, decode_records, quarantined_records, valid_events
from sensorpipe.metrics import SCORING_METRICS
from sensorpipe.sensors import catalogue
from sensorpipe.sinks.alerts import AlertStats, ShadowStore, foreach_batch_alerts
from sensorpipe.sinks.lake import start_lake_query, with_trigger
from sensorpipe.sinks.warehouse import MINUTE_AGGREGATES, LoadStats, Warehouse, foreach_batch_loader
from sensorpipe.sources import read_records

DECODE_METRICS = "decode"


# How the lake's tables are partitioned (directories, and the catalog's partition columns).
EVENTS_PARTITIONS = ("event_date", "event_hour")
QUARANTINE_PARTITIONS = ("arrival_date",)
JOINT_PARTITIONS = ("moment_date",)


def decode_metrics() -> list[Column]:
    """Per-batch counts observed on decoded records: in, valid, and each quarantine reason."""
    return [
        F.count(F.lit(1)).alias("records_in"),
        F.count_if(F.col("reason").isNull()).alias("valid"),
        *[F.count_if(F.col("reason") == r).alias(r) for r in REASONS],
    ]


def decoded_stream(
    spark: SparkSession, source: SourceSettings, decode: DecodeSettings, checkpoint: str
) -> DataFrame:
    """The source's records decoded and validated, with per-batch counts observed. Each query
    reading the source has its own (its checkpoint keeps its own source offsets)."""
    records = read_records(spark, source, checkpoint)
    return records.transform(
        decode_records,
        max_record_bytes=decode.max_record_bytes,
        max_event_lag_hours=decode.max_event_lag_hours,
        max_event_lead_minutes=decode.max_event_lead_minutes,
        sensors=catalogue(decode.catalogue),
    ).observe(DECODE_METRICS, *decode_metrics())


SALT_FILE = "sensorpipe-bucket-salt.json"


def bucket_salt(checkpoint: str) -> int | None:
    """The scoring query's bucket salt (ScoringSettings.bucket_salt): made at its checkpoint's
    first start and kept beside Spark's files in it, so a restart buckets every key as before.
    A checkpoint Spark made before salts existed keeps the unkeyed hash its state is in."""
    import secrets

    from sensorpipe.jsonstore import JsonStore

    store = JsonStore(checkpoint)
    if store.read(SALT_FILE) is None:
        legacy = store.text("metadata") is not None
        store.create(SALT_FILE, {"salt": None if legacy else secrets.randbits(62)})
    return store.read(SALT_FILE)["salt"]


def scoring_settings(
    anomaly: AnomalySettings, partitions: int, log_key: bytes = b"", salt: int | None = None
) -> ScoringSettings:
    """The streaming scorer's settings, as plain values."""
    return ScoringSettings(
        detector=detector_spec(anomaly.detector, anomaly.forest_trees),
        threshold=anomaly.threshold,
        warmup=anomaly.warmup_points,
        ttl_ms=anomaly.state_ttl_hours * 3600 * 1000,
        quiet=timedelta(minutes=anomaly.incident_quiet_minutes),
        buckets=anomaly.state_buckets,
        partitions=partitions,
        snapshot_every=anomaly.snapshot_every_points,
        resident_dir=anomaly.resident_dir,
        resident_bytes=anomaly.resident_mb << 20,
        max_live_keys=anomaly.max_live_keys,
        log_key=log_key,
        bucket_salt=salt,
    )


def start_events_query(
    decoded: DataFrame,
    anomaly: AnomalySettings,
    *,
    shuffle_partitions: int,
    path: str,
    checkpoint: str,
    table_format: str,
    trigger: str,
    query_name: str,
    sink_log_retention: str | None = None,
    log_key: bytes = b"",
) -> StreamingQuery:
    """Valid events, each scored with the state of its (device, sensor), appended to the raw
    events table by (day, hour)."""
    settings = scoring_settings(anomaly, shuffle_partitions, log_key, bucket_salt(checkpoint))
    scored = score_stream(decoded.transform(valid_events), settings, observe_as=SCORING_METRICS)
    return start_lake_query(
        scored,
        path=path,
        checkpoint=checkpoint,
        partition_by=EVENTS_PARTITIONS,
        query_name=query_name,
        table_format=table_format,
        trigger=trigger,
        sink_log_retention=sink_log_retention,
    )


def start_quarantine_query(
    decoded: DataFrame,
    *,
    path: str,
    checkpoint: str,
    table_format: str,
    trigger: str,
    query_name: str,
) -> StreamingQuery:
    """Every record that failed decoding or validation, whole, with its reason."""
    return start_lake_query(
        decoded.transform(quarantined_records),
        path=path,
        checkpoint=checkpoint,
        partition_by=QUARANTINE_PARTITIONS,
        query_name=query_name,
        table_format=table_format,
        trigger=trigger,
    )


def start_aggregates_query(
    lake_events: DataFrame,
    *,
    window: str,
    watermark: str,
    accuracy: int,
    make_warehouse: Callable[[], Warehouse],
    on_load_failure: Callable[[], None],
    stats: LoadStats,
    checkpoint: str,
    trigger: str,
    query_name: str,
) -> StreamingQuery:
    """Windowed aggregates of the lake's scored events -> warehouse, upserted idempotently per
    batch. Reading the lake (only files its sink committed) rather than the stream again means
    the aggregates count exactly the scored events and anomalies the lake holds.

    Only scored events: the query's state holds a row per (device, sensor, window) until the
    watermark passes it, so keys a producer invents would grow it without bound. The scorer
    already bounds its keys (anomaly.max_live_keys over keyed buckets, issue 30) and leaves
    the readings of keys beyond it unscored (in the lake, counted by UnscoredReadings); taking
    its verdict bounds this state by the same keys, with no second bound to keep in step."""
    scored = lake_events.where(F.col("is_anomaly").isNotNull())
    aggregates = window_aggregates(scored, window=window, watermark=watermark, accuracy=accuracy)
    writer = (
        aggregates.writeStream.queryName(query_name)
        .outputMode("update")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(
            foreach_batch_loader(
                make_warehouse,
                MINUTE_AGGREGATES,
                query_name,
                stats,
                on_failure=on_load_failure,
                checkpoint=checkpoint,
            )  # fmt: skip
        )
    )
    return with_trigger(writer, trigger).start()


def start_alerts_query(
    lake_events: DataFrame,
    *,
    make_store: Callable[[], ShadowStore] | None,
    anomalies_path: str,
    stats: AlertStats,
    checkpoint: str,
    trigger: str,
    query_name: str,
    on_dead_letter: Callable[[], None] | None = None,
    load_incidents: Callable[[pd.DataFrame, int], None] | None = None,
) -> StreamingQuery:
    """Anomalies and incident transitions from the lake -> anomalies table and train shadows.
    The filter on anomalous rows runs inside the batch function: pushed into a file stream over
    a folder that is still empty, Spark 4.0.2's optimizer fails the query."""
    writer = (
        lake_events.writeStream.queryName(query_name)
        .option("checkpointLocation", checkpoint)
        .foreachBatch(
            foreach_batch_alerts(make_store, anomalies_path, stats, on_dead_letter, checkpoint,
                                 load_incidents)  # fmt: skip
        )
    )
    return with_trigger(writer, trigger).start()


def start_joint_query(
    lake_events: DataFrame,
    settings: AnomalySettings,
    *,
    path: str,
    checkpoint: str,
    table_format: str,
    trigger: str,
    query_name: str,
) -> StreamingQuery:
    """Each device's sensors judged together (anomaly.joint_sensors) -> the joint table: a
    row per moment judged. From the lake's scored events, like the aggregates."""
    judged = score_joint_stream(
        lake_events, settings.joint_sensors, settings.joint_moment_seconds,
        settings.joint_hold_seconds,
    )  # fmt: skip
    return start_lake_query(
        judged,
        path=path,
        checkpoint=checkpoint,
        partition_by=JOINT_PARTITIONS,
        query_name=query_name,
        table_format=table_format,
        trigger=trigger,
    )
