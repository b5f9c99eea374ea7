"""Run orchestration: the one place that decides from the settings which queries a run has,
starts them, waits for them and sums up, for continuous and finite runs alike.

A run always has the events and quarantine queries (source -> lake). The side queries read the
lake's committed events: aggregates (when a warehouse is configured) and alerts (when a shadow
store is). A continuous run starts them beside the lake queries once the events table holds a
first commit; a finite run starts them after the source is drained, and waits for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from sensorpipe.catalog import (
    CommittedPartitionsListener,
    add_partitions,
    partition_spec,
    register_table,
)
from sensorpipe.config import Settings
from sensorpipe.logref import log_key
from sensorpipe.metrics import (
    ALERT_DEAD_LETTERS,
    WAREHOUSE_LOAD_FAILURES,
    commit_lag_listener,
    metrics_from_settings,
)
from sensorpipe.schemas import QUARANTINE_SCHEMA, SCORED_EVENT_SCHEMA
from sensorpipe.session import keep_progress_reports
from sensorpipe.sinks.alerts import AlertFastPath, AlertStats, shadow_store_from_settings
from sensorpipe.sinks.alerts.incidents_table import IncidentLoader
from sensorpipe.sinks.lake import AVAILABLE_NOW, committed_files, stream_table
from sensorpipe.sinks.sink_log import checkpoint_query_id
from sensorpipe.sinks.warehouse import (
    INCIDENTS,
    MINUTE_AGGREGATES,
    LoadStats,
    warehouse_from_settings,
)
from sensorpipe.sources import pin_starting_position
from sensorpipe.streaming.queries import (
    EVENTS_PARTITIONS,
    QUARANTINE_PARTITIONS,
    decoded_stream,
    start_aggregates_query,
    start_alerts_query,
    start_events_query,
    start_joint_query,
    start_quarantine_query,
)
from sensorpipe.streaming.summary import (
    LakeStart,
    RunSummary,
    lake_start,
    lake_summary,
    progress_printer,
    side_summary,
)


@dataclass(frozen=True)
class RunPlan:
    """Which queries and helpers a run has, decided once from the settings."""

    continuous: bool
    aggregates: bool
    alerts: bool
    metrics: bool
    joint: bool

    @classmethod
    def of(cls, settings: Settings) -> RunPlan:
        return cls(
            continuous=settings.stream.trigger != AVAILABLE_NOW,
            aggregates=settings.warehouse.kind != "none",
            alerts=settings.alerts.kind != "none",
            metrics=settings.metrics.kind != "none",
            joint=bool(settings.anomaly.joint_sensors),
        )

    @property
    def side_queries(self) -> bool:
        return self.aggregates or self.alerts or self.joint


@dataclass
class LakeRun:
    """The running queries, what the lake tables held before they started, and the counters
    the side queries' batch functions keep."""

    events: StreamingQuery
    quarantine: StreamingQuery
    events_start: LakeStart | None
    quarantine_start: LakeStart | None
    aggregates: StreamingQuery | None = None
    load_stats: LoadStats = field(default_factory=LoadStats)
    alerts: StreamingQuery | None = None
    alert_stats: AlertStats = field(default_factory=AlertStats)
    alert_fast_path: AlertFastPath | None = None
    joint: StreamingQuery | None = None
    # Incident transitions loaded into the warehouse, by the fast path and the alerts query.
    incident_loaders: list[IncidentLoader] = field(default_factory=list)
    # Listeners on the events query (progress lines; commit lag, when metrics are on), as
    # (spark, listener), removed when the run stops.
    listeners: list[tuple[SparkSession, object]] = field(default_factory=list)

    def stop(self) -> None:
        """Stop every query, the alert fast path and the commit-lag listener. A query is
        stopped between its micro-batches where it can be: stopped in the middle of one, its
        lake write is interrupted and Spark logs the aborted job as an ERROR (seen at every
        stop of a continuous run; the batch is redone on the next start, so nothing is lost,
        but an operator cannot tell it from a failure)."""
        for query in self.queries:
            stop_between_batches(query)
        if self.alert_fast_path is not None:
            self.alert_fast_path.stop()
            self.alert_fast_path = None
        while self.listeners:
            spark, listener = self.listeners.pop()
            spark.streams.removeListener(listener)

    @property
    def queries(self) -> list[StreamingQuery]:
        return [
            q
            for q in (self.events, self.quarantine, self.aggregates, self.alerts, self.joint)
            if q is not None
        ]


def stop_between_batches(query: StreamingQuery, patience_seconds: float = 30.0) -> None:
    """Stop `query` once its current micro-batch (if any) has finished, waiting at most
    `patience_seconds` for it; a trigger that starts in between is interrupted as before."""
    deadline = time.monotonic() + patience_seconds
    while query.isActive and time.monotonic() < deadline:
        try:
            if not query.status.get("isTriggerActive"):
                break
        except Exception:  # noqa: BLE001 - the query ended meanwhile
            break
        time.sleep(0.02)
    if query.isActive:
        query.stop()


def _name(settings: Settings, query: str) -> str:
    return f"{settings.stream.query_prefix}_{query}"


def _checkpoint(settings: Settings, query: str) -> str:
    return f"{settings.lake.checkpoint_root}/{query}"


# What the streaming job loads into the warehouse.
WAREHOUSE_TABLES = [MINUTE_AGGREGATES, INCIDENTS]


def metric_counter(settings: Settings, name: str) -> Callable[[], None]:
    """A callback adding 1 to the metric `name` of this job (its Job dimension), as the
    estate's alarms watch it; nothing when metrics are off."""
    metrics_settings, job = settings.metrics, settings.stream.query_prefix
    return lambda: metrics_from_settings(metrics_settings, job).put(name, 1, "Count")


def incident_loader(settings: Settings, query: str) -> IncidentLoader:
    """Loads the transitions a query delivers into the warehouse's incidents table, named in
    the load log by the query and its checkpoint (a new checkpoint restarts batch ids)."""
    warehouse_settings, checkpoint = settings.warehouse, _checkpoint(settings, query)
    return IncidentLoader(
        lambda: warehouse_from_settings(warehouse_settings),
        lambda: f"{_name(settings, query)}:incidents:{checkpoint_query_id(checkpoint)}",
    )


def side_trigger(settings: Settings) -> str:
    """The trigger of the queries no one waits for (quarantine, aggregates; alerts behind
    the fast path)."""
    return settings.stream.side_trigger or settings.stream.trigger


def register_lake_tables(spark: SparkSession, settings: Settings) -> list[object]:
    """The events and quarantine tables in the catalog, and a listener that adds each
    committed micro-batch's partitions (none without a catalog)."""
    catalog, lake = settings.catalog, settings.lake
    if catalog.kind == "none":
        return []
    tables = {
        "events": (lake.events_path, SCORED_EVENT_SCHEMA, EVENTS_PARTITIONS),
        "quarantine": (lake.quarantine_path, QUARANTINE_SCHEMA, QUARANTINE_PARTITIONS),
    }
    for table, (path, schema, partitions) in tables.items():
        register_table(spark, catalog, settings.lake_database, table, path, schema, partitions,
                       lake.format)  # fmt: skip
    if lake.format != "parquet":  # Delta keeps its partitions in its own log
        return []
    by_query = {_name(settings, t): (t, path) for t, (path, _, _) in tables.items()}
    return [CommittedPartitionsListener(spark, catalog, settings.lake_database, by_query)]


def start_lake_run(spark: SparkSession, settings: Settings) -> LakeRun:
    """Start a run: the lake queries, and in a continuous run the side queries too."""
    plan = RunPlan.of(settings)
    keep_progress_reports(spark, plan.continuous)
    lake = settings.lake
    starts = (
        lake_start(spark, lake.events_path, lake.format, SCORED_EVENT_SCHEMA,
                   _checkpoint(settings, "events")),
        lake_start(spark, lake.quarantine_path, lake.format, QUARANTINE_SCHEMA,
                   _checkpoint(settings, "quarantine")),
    )  # fmt: skip
    alert_stats = AlertStats()
    loaders: list[IncidentLoader] = []
    fast_path = None
    if plan.continuous and settings.alerts.delivers:
        alert_settings = settings.alerts
        if plan.aggregates:  # the tables first: the fast path may load incidents at once
            warehouse_from_settings(settings.warehouse).ensure_tables(WAREHOUSE_TABLES)
            loaders.append(incident_loader(settings, "events"))
        fast_path = AlertFastPath(
            _name(settings, "events"),
            lake.events_path,
            lambda: shadow_store_from_settings(alert_settings),
            alert_stats,
            incidents=loaders[0] if loaders else None,
        )
        fast_path.attach(spark)
    listeners = [progress_printer(_name(settings, "events"))]
    listeners += register_lake_tables(spark, settings)
    if plan.metrics:
        metrics = metrics_from_settings(settings.metrics, settings.stream.query_prefix)
        listeners.append(commit_lag_listener(metrics, _name(settings, "events")))
    for listener in listeners:
        spark.streams.addListener(listener)
    source = pin_starting_position(settings.source, lake.checkpoint_root)
    events = start_events_query(
        decoded_stream(spark, source, settings.decode, _checkpoint(settings, "events")),
        settings.anomaly,
        shuffle_partitions=settings.spark.shuffle_partitions,
        path=lake.events_path,
        checkpoint=_checkpoint(settings, "events"),
        table_format=lake.format,
        trigger=settings.stream.trigger,
        query_name=_name(settings, "events"),
        sink_log_retention=lake.sink_log_retention,
        log_key=log_key(settings),
    )
    try:
        quarantine = start_quarantine_query(
            decoded_stream(spark, source, settings.decode, _checkpoint(settings, "quarantine")),
            path=lake.quarantine_path,
            checkpoint=_checkpoint(settings, "quarantine"),
            table_format=lake.format,
            trigger=side_trigger(settings),
            query_name=_name(settings, "quarantine"),
        )
    except Exception:
        events.stop()
        for listener in listeners:
            spark.streams.removeListener(listener)
        raise
    run = LakeRun(
        events, quarantine, *starts, alert_stats=alert_stats, alert_fast_path=fast_path,
        incident_loaders=loaders, listeners=[(spark, listener) for listener in listeners],
    )  # fmt: skip
    if plan.continuous and plan.side_queries:
        try:
            _wait_for_first_commit(spark, settings, events)
            start_side_queries(spark, settings, plan, run)
        except Exception:
            run.stop()
            raise
    return run


def start_side_queries(
    spark: SparkSession, settings: Settings, plan: RunPlan, run: LakeRun
) -> None:
    """The queries reading the lake's committed events: aggregates -> warehouse, alerts ->
    anomalies table and shadows, joint -> the joint table (as the plan has them)."""
    lake = settings.lake

    def lake_events():  # noqa: ANN202 - a DataFrame; one stream per query
        return stream_table(
            spark, lake.events_path, lake.format, SCORED_EVENT_SCHEMA,
            settings.aggregates.max_files_per_trigger,
        )  # fmt: skip

    if plan.aggregates:
        warehouse_settings = settings.warehouse
        warehouse_from_settings(warehouse_settings).ensure_tables(WAREHOUSE_TABLES)
        run.aggregates = start_aggregates_query(
            lake_events(),
            window=settings.aggregates.window,
            watermark=settings.aggregates.watermark,
            accuracy=settings.aggregates.percentile_accuracy,
            make_warehouse=lambda: warehouse_from_settings(warehouse_settings),
            on_load_failure=metric_counter(settings, WAREHOUSE_LOAD_FAILURES),
            stats=run.load_stats,
            checkpoint=_checkpoint(settings, "aggregates"),
            trigger=side_trigger(settings),
            query_name=_name(settings, "aggregates"),
        )
    if plan.alerts:
        alert_settings = settings.alerts
        loader = incident_loader(settings, "alerts") if plan.aggregates else None
        if loader is not None:
            run.incident_loaders.append(loader)
        run.alerts = start_alerts_query(
            lake_events(),
            make_store=(lambda: shadow_store_from_settings(alert_settings))
            if alert_settings.delivers
            else None,
            anomalies_path=str(lake.anomalies_path),
            stats=run.alert_stats,
            checkpoint=_checkpoint(settings, "alerts"),
            # With the fast path delivering each scoring batch's alerts as it commits, this
            # query is the backstop (and the anomalies table): at the scoring trigger it took
            # the cores the scoring batches need (issue 14: alert latency).
            trigger=side_trigger(settings) if run.alert_fast_path else settings.stream.trigger,
            query_name=_name(settings, "alerts"),
            on_dead_letter=metric_counter(settings, ALERT_DEAD_LETTERS),
            load_incidents=loader.load if loader is not None else None,
        )
    if plan.joint:
        run.joint = start_joint_query(
            lake_events(),
            settings.anomaly,
            path=str(lake.joint_path),
            checkpoint=_checkpoint(settings, "joint"),
            table_format=lake.format,
            trigger=side_trigger(settings),
            query_name=_name(settings, "joint"),
        )


def _wait_for_first_commit(spark: SparkSession, settings: Settings, events: StreamingQuery) -> None:
    """Block until the events table holds a committed file: a file stream over a folder with no
    partition yet would not know the table's partition columns (the side queries start after)."""
    lake = settings.lake
    while not committed_files(spark, lake.events_path, lake.format, SCORED_EVENT_SCHEMA):
        if events.exception() is not None or not events.isActive:
            return  # await_lake_run reports the events query's failure
        time.sleep(1.0)


def await_lake_run(run: LakeRun, poll_seconds: float = 1.0) -> None:
    """Wait for every query; the first that fails, whichever it is, stops the run and its
    StreamingQueryException (which names the query) is raised: a dead aggregates or alerts
    query must not go unnoticed beside an events query that runs for ever. The queries resume
    from their checkpoints when the job is run again, so the step can be re-run as it is."""
    try:
        pending = list(run.queries)
        while pending:
            for query in list(pending):
                if query.exception() is not None:
                    query.awaitTermination()  # raises the query's failure
                if not query.isActive:
                    pending.remove(query)
            if pending:
                try:
                    pending[0].awaitTermination(poll_seconds)
                except Exception:  # noqa: BLE001 - read back through exception() above
                    continue
    finally:
        run.stop()


def register_run_partitions(spark: SparkSession, settings: Settings, summary: RunSummary) -> None:
    """The partitions the run's committed files are in, in the catalog (the listener may not
    have seen the last batches)."""
    catalog = settings.catalog
    if catalog.kind == "none" or settings.lake.format != "parquet":
        return
    for table, write in (("events", summary.events), ("quarantine", summary.quarantine)):
        specs = [partition_spec(d) for d in write.partitions_written if d]
        add_partitions(spark, catalog, settings.lake_database, table, specs)


def summarize_lake_run(spark: SparkSession, settings: Settings, run: LakeRun) -> RunSummary:
    lake_part = lake_summary(
        spark, settings, run.events, run.quarantine,
        (run.events_start, run.quarantine_start), run.queries,
    )  # fmt: skip
    register_run_partitions(spark, settings, lake_part)
    return lake_part + side_summary(
        run.aggregates, run.load_stats.rows, run.load_stats.batches,
        run.alert_stats.transitions, run.alert_stats.updates_sent,
    )  # fmt: skip


def run_lake_job(spark: SparkSession, settings: Settings) -> RunSummary:
    """Run the job; with a finite trigger, until the source is drained, then the side queries.

    A finite (availableNow) run of a Kinesis source reads what its one batch plans; after a
    crash that batch may be the re-run of an unfinished one, so draining the stream can take
    more than one run. Replay files are all read by one run.
    """
    plan = RunPlan.of(settings)
    total: RunSummary | None = None
    read_nothing_before = False
    while True:
        run = start_lake_run(spark, settings)
        await_lake_run(run)
        summary = summarize_lake_run(spark, settings, run)
        total = summary if total is None else total + summary
        if plan.continuous:
            return total
        if settings.source.kind == "replay":
            break
        # Drained: a run that read nothing and ran no batch (the Kinesis source offers no new
        # offset once every shard was read to its tip), or a second run in a row that read
        # nothing (one can read nothing and yet find a shard's end, whose children the next
        # run reads).
        if summary.input_rows == 0 and (summary.batches == 0 or read_nothing_before):
            break
        read_nothing_before = summary.input_rows == 0
    if plan.side_queries:
        # The lake queries have ended: waiting on the run waits for the side queries.
        side = LakeRun(run.events, run.quarantine, None, None)
        try:
            start_side_queries(spark, settings, plan, side)
        except Exception:
            side.stop()
            raise
        await_lake_run(side)
        total = total + side_summary(
            side.aggregates, side.load_stats.rows, side.load_stats.batches,
            side.alert_stats.transitions, side.alert_stats.updates_sent,
        )  # fmt: skip
    return total
