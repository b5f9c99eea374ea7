"""The streaming job's queries and its run summary (extract/load: called from a job's main)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from sensorpipe import __version__
from sensorpipe.aggregates import window_aggregates
from sensorpipe.anomaly.spark import score_stream
from sensorpipe.config import Settings
from sensorpipe.decode import REASONS, decode_records, quarantined_records, valid_events
from sensorpipe.lineage import LineageRun, schema_fingerprint
from sensorpipe.metrics import WAREHOUSE_LOAD_FAILURES, commit_lag_listener, metrics_from_settings
from sensorpipe.schemas import QUARANTINE_SCHEMA, SCORED_EVENT_SCHEMA
from sensorpipe.sinks.alerts import (
    AlertFastPath,
    AlertStats,
    foreach_batch_alerts,
    shadow_store_from_settings,
)
from sensorpipe.sinks.lake import (
    AVAILABLE_NOW,
    committed_files,
    partitions_of,
    start_lake_query,
    with_trigger,
)
from sensorpipe.sinks.warehouse import (
    MINUTE_AGGREGATES,
    LoadStats,
    foreach_batch_loader,
    warehouse_from_settings,
)
from sensorpipe.sources import read_records

DECODE_METRICS = "decode"


def decode_metrics() -> list[Column]:
    """Per-batch counts observed on decoded records: in, valid, and each quarantine reason."""
    return [
        F.count(F.lit(1)).alias("records_in"),
        F.count_if(F.col("reason").isNull()).alias("valid"),
        *[F.count_if(F.col("reason") == r).alias(r) for r in REASONS],
    ]


@dataclass
class TableWrite:
    path: str
    files_written: int = 0
    partitions_written: list[str] = field(default_factory=list)


@dataclass
class RunSummary:
    records_in: int = 0
    valid: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    # Rows read by all queries together (each query reads the source on its own).
    input_rows: int = 0
    # Warehouse: aggregate rows upserted, micro-batches loaded, and valid events that came
    # later than the watermark (in the raw lake, not in the windows).
    aggregate_rows_loaded: int = 0
    aggregate_batches_loaded: int = 0
    late_events: int = 0
    # Alerts: incident transitions (open, escalate, close) and shadow updates sent.
    alert_transitions: int = 0
    shadow_updates: int = 0
    events: TableWrite | None = None
    quarantine: TableWrite | None = None
    # Which copy of the code ran (the wheel, the --py-files zip, a checkout): worth knowing on EMR.
    code: str = field(
        default_factory=lambda: f"sensorpipe {__version__} from {Path(__file__).parent}"
    )

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def reconciled(self) -> bool:
        return self.records_in == self.valid + self.quarantined_total

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "quarantined_total": self.quarantined_total,
            "reconciled": self.reconciled,
        }

    def render(self) -> str:
        lines = [
            "sensorpipe stream run summary",
            f"  micro-batches        {self.batches}",
            f"  records in           {self.records_in}",
            f"  valid                {self.valid}",
            f"  quarantined          {self.quarantined_total}",
        ]
        lines += [f"    {reason:<18} {n}" for reason, n in self.quarantined.items() if n]
        for name, table in (("events", self.events), ("quarantine", self.quarantine)):
            if table:
                lines.append(
                    f"  {name:<11} files {table.files_written}, partitions "
                    f"{len(table.partitions_written)} -> {table.path}"
                )
        if self.aggregate_batches_loaded or self.late_events:
            lines.append(
                f"  warehouse   {self.aggregate_rows_loaded} window rows upserted in "
                f"{self.aggregate_batches_loaded} batches; {self.late_events} events later than "
                "the watermark (in the lake, not in the windows)"
            )
        if self.alert_transitions:
            lines.append(
                f"  alerts      {self.alert_transitions} incident transitions, "
                f"{self.shadow_updates} shadow updates sent"
            )
        lines.append(f"  reconciled (in = valid + quarantined): {self.reconciled}")
        lines.append(f"  code: {self.code}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1, sort_keys=True)

    def plus(self, other: RunSummary) -> RunSummary:
        """Two consecutive runs of the job, as one."""

        def table(a: TableWrite | None, b: TableWrite | None) -> TableWrite | None:
            if a is None or b is None:
                return a or b
            parts = sorted(set(a.partitions_written) | set(b.partitions_written))
            return TableWrite(a.path, a.files_written + b.files_written, parts)

        return RunSummary(
            records_in=self.records_in + other.records_in,
            valid=self.valid + other.valid,
            quarantined={
                r: self.quarantined.get(r, 0) + other.quarantined.get(r, 0) for r in REASONS
            },
            batches=self.batches + other.batches,
            events=table(self.events, other.events),
            quarantine=table(self.quarantine, other.quarantine),
            input_rows=self.input_rows + other.input_rows,
            aggregate_rows_loaded=self.aggregate_rows_loaded + other.aggregate_rows_loaded,
            aggregate_batches_loaded=self.aggregate_batches_loaded + other.aggregate_batches_loaded,
            late_events=self.late_events + other.late_events,
            alert_transitions=self.alert_transitions + other.alert_transitions,
            shadow_updates=self.shadow_updates + other.shadow_updates,
        )


@dataclass
class LakeRun:
    """The running queries and what the lake tables held before they started."""

    events: StreamingQuery
    quarantine: StreamingQuery
    events_before: set[str]
    quarantine_before: set[str]
    aggregates: StreamingQuery | None = None
    load_stats: LoadStats = field(default_factory=LoadStats)
    alerts: StreamingQuery | None = None
    alert_stats: AlertStats = field(default_factory=AlertStats)
    alert_fast_path: AlertFastPath | None = None
    # (spark, listener) publishing the events table's commit lag, when metrics are on
    commit_lag: tuple[SparkSession, object] | None = None

    def stop(self) -> None:
        """Stop every query, the alert fast path and the commit-lag listener."""
        for query in self.queries:
            if query.isActive:
                query.stop()
        if self.commit_lag is not None:
            spark, listener = self.commit_lag
            spark.streams.removeListener(listener)
            self.commit_lag = None
        if self.alert_fast_path is not None:
            self.alert_fast_path.stop()
            self.alert_fast_path = None

    @property
    def queries(self) -> list[StreamingQuery]:
        return [
            q for q in (self.events, self.quarantine, self.aggregates, self.alerts) if q is not None
        ]


def decoded_stream(spark: SparkSession, settings: Settings, checkpoint: str) -> DataFrame:
    records = read_records(spark, settings.source, checkpoint)
    return records.transform(
        decode_records,
        max_record_bytes=settings.decode.max_record_bytes,
        max_event_lag_hours=settings.decode.max_event_lag_hours,
        max_event_lead_minutes=settings.decode.max_event_lead_minutes,
    ).observe(DECODE_METRICS, *decode_metrics())


def start_lake_run(spark: SparkSession, settings: Settings) -> LakeRun:
    """Start the source -> decode -> lake queries (events and quarantine)."""
    lake, prefix = settings.lake, settings.stream.query_prefix
    before = (
        committed_files(spark, lake.events_path, lake.format, SCORED_EVENT_SCHEMA),
        committed_files(spark, lake.quarantine_path, lake.format, QUARANTINE_SCHEMA),
    )
    common = {"table_format": lake.format, "trigger": settings.stream.trigger}
    continuous = settings.stream.trigger != AVAILABLE_NOW
    alert_stats = AlertStats()
    fast_path = None
    if continuous and settings.alerts.kind != "none":
        alert_settings = settings.alerts
        fast_path = AlertFastPath(
            f"{prefix}_events",
            lake.events_path,
            lambda: shadow_store_from_settings(alert_settings),
            alert_stats,
        )
        fast_path.attach(spark)
    commit_lag = None
    if settings.metrics.kind != "none":
        listener = commit_lag_listener(metrics_from_settings(settings.metrics), f"{prefix}_events")
        spark.streams.addListener(listener)
        commit_lag = (spark, listener)
    events_checkpoint = f"{lake.checkpoint_root}/events"
    quarantine_checkpoint = f"{lake.checkpoint_root}/quarantine"
    anomaly = settings.anomaly
    scored = score_stream(
        decoded_stream(spark, settings, events_checkpoint).transform(valid_events),
        detector=anomaly.detector,
        threshold=anomaly.threshold,
        warmup=anomaly.warmup_points,
        ttl_ms=anomaly.state_ttl_hours * 3600 * 1000,
        quiet=timedelta(minutes=anomaly.incident_quiet_minutes),
    )
    events = start_lake_query(
        scored,
        one_batch=True,
        path=lake.events_path,
        checkpoint=events_checkpoint,
        partition_by=["event_date", "event_hour"],
        query_name=f"{prefix}_events",
        **common,
    )
    try:
        quarantine = start_lake_query(
            decoded_stream(spark, settings, quarantine_checkpoint).transform(quarantined_records),
            path=lake.quarantine_path,
            checkpoint=quarantine_checkpoint,
            partition_by=["arrival_date"],
            query_name=f"{prefix}_quarantine",
            **{**common, "trigger": side_trigger(settings)},
        )
    except Exception:
        events.stop()
        raise
    run = LakeRun(events, quarantine, *before, alert_stats=alert_stats, alert_fast_path=fast_path,
                  commit_lag=commit_lag)  # fmt: skip
    # Continuous runs aggregate and alert alongside; a finite run does so once the lake is
    # written (run_lake_job).
    if continuous:
        try:
            if settings.warehouse.kind != "none" or settings.alerts.kind != "none":
                _wait_for_first_commit(spark, settings, events)
            if settings.warehouse.kind != "none":
                run.aggregates = start_aggregates_query(spark, settings, run.load_stats)
            if settings.alerts.kind != "none":
                run.alerts = start_alerts_query(spark, settings, run.alert_stats)
        except Exception:
            run.stop()
            raise
    return run


def side_trigger(settings: Settings) -> str:
    """The trigger of the queries no one waits for (quarantine, aggregates)."""
    return settings.stream.side_trigger or settings.stream.trigger


def _wait_for_first_commit(spark: SparkSession, settings: Settings, events: StreamingQuery) -> None:
    """Block until the events table holds a committed file: a file stream over a folder with no
    partition yet would not know the table's partition columns (the queries reading the lake
    start after this)."""
    lake = settings.lake
    while not committed_files(spark, lake.events_path, lake.format, SCORED_EVENT_SCHEMA):
        if events.exception() is not None or not events.isActive:
            return  # await_lake_run reports the events query's failure
        time.sleep(1.0)


def _lake_events_stream(spark: SparkSession, settings: Settings, max_files: int) -> DataFrame:
    """The lake's scored events as a stream (only files the lake's sink committed)."""
    reader = spark.readStream.format(settings.lake.format).option("maxFilesPerTrigger", max_files)
    if settings.lake.format == "parquet":
        reader = reader.schema(SCORED_EVENT_SCHEMA)
    return reader.load(settings.lake.events_path)


def start_alerts_query(
    spark: SparkSession, settings: Settings, stats: AlertStats
) -> StreamingQuery:
    """Anomalies and incident transitions from the lake -> anomalies table and train shadows."""
    alert_settings = settings.alerts
    checkpoint = f"{settings.lake.checkpoint_root}/alerts"
    # The filter to anomalous rows is applied inside foreachBatch: on a stream over a lake
    # folder that is still empty, Spark 4.0.2's optimizer fails the query when it pushes it.
    anomalous = _lake_events_stream(spark, settings, settings.aggregates.max_files_per_trigger)
    writer = (
        anomalous.writeStream.queryName(f"{settings.stream.query_prefix}_alerts")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(
            foreach_batch_alerts(
                lambda: shadow_store_from_settings(alert_settings),
                settings.lake.anomalies_path,
                stats,
            )
        )
    )
    return with_trigger(writer, settings.stream.trigger).start()


def start_aggregates_query(
    spark: SparkSession, settings: Settings, stats: LoadStats
) -> StreamingQuery:
    """Windowed aggregates of the lake's scored events -> warehouse, upserted idempotently per
    batch. Reading the lake (only files its sink committed) rather than the stream again means
    the aggregates count exactly the events and anomalies the lake holds."""
    warehouse_settings, metrics_settings = settings.warehouse, settings.metrics
    warehouse_from_settings(warehouse_settings).ensure_tables([MINUTE_AGGREGATES])
    checkpoint = f"{settings.lake.checkpoint_root}/aggregates"
    query_name = f"{settings.stream.query_prefix}_aggregates"
    aggregates = window_aggregates(
        _lake_events_stream(spark, settings, settings.aggregates.max_files_per_trigger),
        window=settings.aggregates.window,
        watermark=settings.aggregates.watermark,
        accuracy=settings.aggregates.percentile_accuracy,
    )
    writer = (
        aggregates.writeStream.queryName(query_name)
        .outputMode("update")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(
            foreach_batch_loader(
                lambda: warehouse_from_settings(warehouse_settings),
                MINUTE_AGGREGATES,
                query_name,
                stats,
                on_failure=lambda: metrics_from_settings(metrics_settings).put(
                    WAREHOUSE_LOAD_FAILURES, 1, "Count"
                ),
            )
        )
    )
    return with_trigger(writer, side_trigger(settings)).start()


def await_lake_run(run: LakeRun) -> None:
    """Wait for the queries; if one fails, stop the others and raise its error."""
    try:
        for query in run.queries:
            query.awaitTermination()
    finally:
        run.stop()


def late_events(query: StreamingQuery) -> int:
    """Events the windowed aggregation dropped for being later than its watermark."""
    return sum(
        op.numRowsDroppedByWatermark for p in query.recentProgress for op in p.stateOperators
    )


def _observed(query: StreamingQuery) -> list[dict[str, int]]:
    rows = []
    for progress in query.recentProgress:
        metrics = progress.observedMetrics.get(DECODE_METRICS)
        if metrics is not None:
            rows.append(metrics.asDict())
    return rows


def summarize_lake_run(spark: SparkSession, settings: Settings, run: LakeRun) -> RunSummary:
    lake = settings.lake
    events_batches = _observed(run.events)
    quarantine_batches = _observed(run.quarantine)
    events_new = (
        committed_files(spark, lake.events_path, lake.format, SCORED_EVENT_SCHEMA)
        - run.events_before
    )
    quarantine_new = (
        committed_files(spark, lake.quarantine_path, lake.format, QUARANTINE_SCHEMA)
        - run.quarantine_before
    )
    return RunSummary(
        records_in=sum(b["records_in"] for b in events_batches),
        valid=sum(b["valid"] for b in events_batches),
        quarantined={r: sum(b[r] for b in quarantine_batches) for r in REASONS},
        batches=len(events_batches),
        input_rows=sum(p.numInputRows for q in run.queries for p in q.recentProgress),
        aggregate_rows_loaded=run.load_stats.rows,
        aggregate_batches_loaded=run.load_stats.batches,
        late_events=late_events(run.aggregates) if run.aggregates else 0,
        alert_transitions=run.alert_stats.transitions,
        shadow_updates=run.alert_stats.updates_sent,
        events=TableWrite(lake.events_path, len(events_new), sorted(partitions_of(events_new))),
        quarantine=TableWrite(
            lake.quarantine_path, len(quarantine_new), sorted(partitions_of(quarantine_new))
        ),
    )


def run_lake_job(spark: SparkSession, settings: Settings) -> RunSummary:
    """Run the job; with a finite trigger, until the source is drained, then the aggregates.

    A finite (availableNow) run of a Kinesis source reads what its one batch plans; after a
    crash that batch may be the re-run of an unfinished one, so draining the stream can take
    more than one run. Replay files are all read by one run.
    """
    total: RunSummary | None = None
    while True:
        run = start_lake_run(spark, settings)
        await_lake_run(run)
        summary = summarize_lake_run(spark, settings, run)
        total = summary if total is None else total.plus(summary)
        finite = settings.stream.trigger == AVAILABLE_NOW
        if not finite:
            return total
        if settings.source.kind == "replay" or summary.input_rows == 0:
            break
    if settings.warehouse.kind != "none":
        stats = LoadStats()
        query = _finished(start_aggregates_query(spark, settings, stats))
        total.aggregate_rows_loaded += stats.rows
        total.aggregate_batches_loaded += stats.batches
        total.late_events += late_events(query)
    if settings.alerts.kind != "none":
        alert_stats = AlertStats()
        _finished(start_alerts_query(spark, settings, alert_stats))
        total.alert_transitions += alert_stats.transitions
        total.shadow_updates += alert_stats.updates_sent
    return total


def record_lineage(run: LineageRun, settings: Settings, summary: RunSummary) -> None:
    """What a stream run read and wrote, for the lineage table."""
    source = settings.source
    if source.kind == "replay":
        run.read("path", source.replay_path, summary.records_in)
    else:
        run.read("stream", f"kinesis:{source.stream_name}", summary.records_in)
    lake = settings.lake
    run.wrote("path", lake.events_path, summary.valid, schema_fingerprint(SCORED_EVENT_SCHEMA))
    run.wrote(
        "path",
        lake.quarantine_path,
        summary.quarantined_total,
        schema_fingerprint(QUARANTINE_SCHEMA),
        quarantine=True,
    )
    if settings.warehouse.kind != "none":
        run.wrote("table", f"warehouse.{MINUTE_AGGREGATES.name}", summary.aggregate_rows_loaded)
    if settings.alerts.kind != "none" and lake.anomalies_path:
        run.wrote("path", lake.anomalies_path, summary.alert_transitions)


def _finished(query: StreamingQuery) -> StreamingQuery:
    try:
        query.awaitTermination()
    finally:
        if query.isActive:
            query.stop()
    return query
