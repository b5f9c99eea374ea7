"""The run summary: what a run of the streaming job read, wrote, quarantined, loaded and sent,
from the queries' progress and the tables' logs; and its lineage record."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from sensorpipe import __version__
from sensorpipe.anomaly.evaluation import Evaluation, evaluate
from sensorpipe.config import Settings
from sensorpipe.decode import REASONS
from sensorpipe.lineage import LineageRun, schema_fingerprint
from sensorpipe.logref import device_namer
from sensorpipe.metrics import SCORING_METRICS
from sensorpipe.schemas import QUARANTINE_SCHEMA, SCORED_EVENT_SCHEMA
from sensorpipe.sinks.lake import committed_files, partitions_of, read_events
from sensorpipe.sinks.sink_log import (
    SinkLogGap,
    damaged_files,
    files_through,
    latest_batch,
    next_batch_id,
    sink_log_of,
)
from sensorpipe.sinks.warehouse import MINUTE_AGGREGATES
from sensorpipe.streaming.queries import DECODE_METRICS


@dataclass
class TableWrite:
    path: str
    files_written: int = 0
    partitions_written: list[str] = field(default_factory=list)

    def __add__(self, other: TableWrite) -> TableWrite:
        parts = sorted(set(self.partitions_written) | set(other.partitions_written))
        return TableWrite(self.path, self.files_written + other.files_written, parts)


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
    # The quarantine query reads the source on its own: what it read (equal to records_in
    # unless a crash left the two queries at different batches).
    quarantine_query_records_in: int = 0
    # Valid readings of keys beyond anomaly.max_live_keys: in the lake, not scored.
    unscored: int = 0
    # Why the run does not reconcile: each lake query's records in = valid + quarantined and
    # equal to what the source gave it, and its table holding exactly its batches' rows.
    problems: list[str] = field(default_factory=list)
    # Which copy of the code ran (the wheel, the --py-files zip, a checkout): worth knowing on EMR.
    code: str = field(
        default_factory=lambda: f"sensorpipe {__version__} from {Path(__file__).parents[1]}"
    )

    def __add__(self, other: RunSummary) -> RunSummary:
        """Two consecutive runs (or a run and its side queries), as one: counts add up, tables
        merge, the code is this run's."""
        values: dict[str, Any] = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "code":
                values[f.name] = a
            elif isinstance(a, dict):
                values[f.name] = {k: a.get(k, 0) + b.get(k, 0) for k in dict.fromkeys([*a, *b])}
            elif a is None or b is None:
                values[f.name] = a if b is None else b
            else:
                values[f.name] = a + b
        return RunSummary(**values)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def reconciled(self) -> bool:
        return not self.problems

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
        if self.unscored:
            lines.append(f"  unscored             {self.unscored} valid readings of keys beyond "
                         "anomaly.max_live_keys (in the lake, no detector state)")  # fmt: skip
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
            sent = f", {self.shadow_updates} shadow updates sent" if self.shadow_updates else ""
            lines.append(f"  alerts      {self.alert_transitions} incident transitions{sent}")
        if self.quarantine_query_records_in != self.records_in:
            lines.append(
                f"  (the quarantine query read {self.quarantine_query_records_in} records: it "
                "resumed at another batch than the events query)"
            )
        lines += [f"  NOT RECONCILED: {problem}" for problem in self.problems]
        lines.append(f"  reconciled (in = valid + quarantined): {self.reconciled}")
        lines.append(f"  code: {self.code}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1, sort_keys=True)


def late_events(query: StreamingQuery) -> int:
    """Events the windowed aggregation dropped for being later than its watermark."""
    return sum(
        op.numRowsDroppedByWatermark for p in query.recentProgress for op in p.stateOperators
    )


def observed_batches(query: StreamingQuery) -> list[dict[str, int]]:
    """The decode counts each micro-batch of `query` observed."""
    rows = []
    for progress in query.recentProgress:
        metrics = progress.observedMetrics.get(DECODE_METRICS)
        if metrics is not None:
            rows.append(metrics.asDict())
    return rows


@dataclass(frozen=True)
class LakeStart:
    """Where a lake query stood when the run started: the first batch it runs (a crash's
    unfinished batch is run again), the files its table's log listed before that batch, and
    all it listed at the start (a re-run batch that the sink had committed is not executed
    again: the sink skips it, so its files are the crashed run's)."""

    first_batch: int
    before_first: dict[str, int]
    at_start: dict[str, int]
    error: str = ""  # the log could not be read back as of the run's start


def lake_start(spark: SparkSession, path: str, table_format: str, schema: Any,
               checkpoint: str) -> LakeStart:  # fmt: skip
    first = next_batch_id(checkpoint)
    if table_format != "parquet":
        files = dict.fromkeys(committed_files(spark, path, table_format, schema), -1)
        return LakeStart(first, files, files)
    log = sink_log_of(path)
    try:
        return LakeStart(first, files_through(log, first - 1),
                         files_through(log, latest_batch(log)))  # fmt: skip
    except SinkLogGap as exc:
        return LakeStart(first, {}, {}, error=str(exc))


@dataclass
class QueryAccount:
    """One lake query's part of a run, from its own progress: what it read from the source,
    how its decoder classed it, and what its table's log committed for those batches."""

    name: str
    batches: list[int]
    source_rows: int
    records_in: int
    valid: int
    quarantined: dict[str, int]
    files: set[str]  # written by this run's batches
    lake_rows: int | None  # rows in them; None: see problems
    damaged: list[str] = field(default_factory=list)
    lake_error: str = ""
    lake_checked: bool = True

    def problems(self, expected_lake_rows: int, what: str) -> list[str]:
        out = []
        span = f"batches {self.batches[0]}-{self.batches[-1]}" if self.batches else "no batch"
        quarantined = sum(self.quarantined.values())
        if self.source_rows != self.records_in:
            out.append(f"{self.name} ({span}): the source gave {self.source_rows} records, "
                       f"the decoder saw {self.records_in}")  # fmt: skip
        if self.records_in != self.valid + quarantined:
            out.append(f"{self.name} ({span}): {self.records_in} records in, {self.valid} valid "
                       f"+ {quarantined} quarantined")  # fmt: skip
        if not self.lake_checked:
            return out
        out += [f"{self.name} ({span}): a committed file is damaged: {d}" for d in self.damaged]
        if self.lake_error:
            out.append(f"{self.name} ({span}): {self.lake_error}")
        elif self.lake_rows != expected_lake_rows and not self.damaged:
            out.append(f"{self.name} ({span}): the table holds {self.lake_rows} rows for these "
                       f"batches, {expected_lake_rows} {what} records")  # fmt: skip
        return out


def _rows_in(spark: SparkSession, files: set[str]) -> tuple[int | None, str]:
    """Rows in the given Parquet files, or None and why."""
    if not files:
        return 0, ""
    try:
        return spark.read.parquet(*sorted(files)).count(), ""
    except Exception as exc:  # noqa: BLE001 - reported as a reconciliation failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"a committed file cannot be read ({first[:300]})"


def query_account(
    spark: SparkSession, query: StreamingQuery, path: str, table_format: str, schema: Any,
    start: LakeStart,
) -> QueryAccount:  # fmt: skip
    """The query's batches of this run (from its progress) against its table's log.

    A batch that ran its plan observed its decode counts, and the files the log gained from the
    start of the run hold exactly its rows. A batch re-run after a crash whose files the sink
    had already committed runs nothing (the sink skips it): no counts, but its files, and every
    file the log lists from the run's first batch on, must still be there at their logged size.
    """
    executed = [p for p in query.recentProgress if "addBatch" in p.durationMs]
    batches = sorted({p.batchId for p in executed})
    observed = [p.observedMetrics[DECODE_METRICS].asDict() for p in executed
                if p.observedMetrics.get(DECODE_METRICS) is not None]  # fmt: skip
    account = QueryAccount(
        name=query.name or str(query.id),
        batches=batches,
        source_rows=sum(p.numInputRows for p in executed),
        records_in=sum(b["records_in"] for b in observed),
        valid=sum(b["valid"] for b in observed),
        quarantined={r: sum(b[r] for b in observed) for r in REASONS},
        files=set(),
        lake_rows=0,
    )
    if table_format != "parquet":
        # Delta commits each batch atomically with its (query id, batch id) in its own log;
        # the per-query checks stand, the per-batch file check is the file sink's.
        account.files = committed_files(spark, path, table_format, schema) - set(start.at_start)
        account.lake_checked = False
        return account
    if start.error:
        account.lake_rows, account.lake_error = None, start.error
        return account
    if not batches:
        return account
    log = sink_log_of(path)
    try:
        now = files_through(log, batches[-1])
        # Only the last batches are in the progress of a very long continuous run.
        before_first = (
            start.before_first
            if batches[0] <= start.first_batch
            else files_through(log, batches[0] - 1)
        )
    except SinkLogGap as exc:
        account.lake_rows, account.lake_error = None, str(exc)
        return account
    account.files = set(now) - set(start.at_start)
    account.damaged = damaged_files({f: n for f, n in now.items() if f not in before_first})
    if not account.damaged:
        account.lake_rows, account.lake_error = _rows_in(spark, account.files)
    return account


def lake_summary(
    spark: SparkSession,
    settings: Settings,
    events: StreamingQuery,
    quarantine: StreamingQuery,
    starts: tuple[LakeStart, LakeStart],
    queries: list[StreamingQuery],
) -> RunSummary:
    """The events and quarantine queries' part of a run, each reconciled on its own: after a
    crash the two may stand at different batches, so the events query's records are never
    compared with the quarantine query's."""
    lake = settings.lake
    ev = query_account(spark, events, lake.events_path, lake.format, SCORED_EVENT_SCHEMA,
                       starts[0])  # fmt: skip
    qu = query_account(spark, quarantine, lake.quarantine_path, lake.format, QUARANTINE_SCHEMA,
                       starts[1])  # fmt: skip
    problems = ev.problems(ev.valid, "valid") + qu.problems(sum(qu.quarantined.values()),
                                                            "quarantined")  # fmt: skip
    return RunSummary(
        records_in=ev.records_in,
        valid=ev.valid,
        quarantined=qu.quarantined,
        batches=len(ev.batches),
        input_rows=sum(p.numInputRows for q in queries for p in q.recentProgress),
        events=TableWrite(lake.events_path, len(ev.files), sorted(partitions_of(ev.files))),
        quarantine=TableWrite(lake.quarantine_path, len(qu.files), sorted(partitions_of(qu.files))),
        quarantine_query_records_in=qu.records_in,
        unscored=sum(
            p.observedMetrics[SCORING_METRICS]["unscored"]
            for p in events.recentProgress
            if p.observedMetrics.get(SCORING_METRICS) is not None
        ),  # fmt: skip
        problems=problems,
    )


def side_summary(
    aggregates: StreamingQuery | None, load_rows: int, load_batches: int,
    transitions: int, updates: int,
) -> RunSummary:  # fmt: skip
    """The aggregates and alerts queries' part of a run."""
    return RunSummary(
        aggregate_rows_loaded=load_rows,
        aggregate_batches_loaded=load_batches,
        late_events=late_events(aggregates) if aggregates is not None else 0,
        alert_transitions=transitions,
        shadow_updates=updates,
    )


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


def progress_printer(query_name: str, out: Any = None) -> Any:
    """A StreamingQueryListener printing one line per micro-batch of `query_name` (the events
    query sees every record): records read, valid, quarantined, and the batch's duration."""
    import sys

    from sensorpipe.listener import ProgressListener

    class Progress(ProgressListener):
        def onQueryProgress(self, event: Any) -> None:
            progress = event.progress
            metrics = progress.observedMetrics.get(DECODE_METRICS)
            if progress.name != query_name or metrics is None:
                return
            counts = metrics.asDict()
            seconds = progress.batchDuration / 1000
            print(
                f"batch {progress.batchId}: {counts['records_in']:,} records read, "
                f"{counts['valid']:,} valid, {counts['records_in'] - counts['valid']:,} "
                f"quarantined ({seconds:.1f} s)",
                file=out or sys.stdout,
                flush=True,
            )

    return Progress()


@dataclass
class ManifestCheck:
    """A run over generated samples against their manifest (make run-hospital, tests): the
    quarantine per reason as planted, and how the detector did on the planted anomalies."""

    planted: dict[str, int]
    quarantined: dict[str, int]
    evaluation: Evaluation
    # How a missed anomaly's device is printed: its keyed reference for protected readings.
    name_device: Callable[[str], str] = str

    @property
    def as_planted(self) -> bool:
        return self.quarantined == self.planted

    def render(self) -> str:
        verdict = "as planted" if self.as_planted else f"NOT as planted ({self.planted})"
        return "\n".join([
            f"  manifest    quarantine per reason {verdict}",
            "  detection   "
            + self.evaluation.render(self.name_device).replace("\n", "\n  "),
        ])  # fmt: skip


def check_against_manifest(
    spark: SparkSession, settings: Settings, summary: RunSummary, manifest: dict[str, Any]
) -> ManifestCheck:
    """`summary`'s quarantine counts against the manifest's, and the events table's flags
    against its planted anomalies (anomaly.evaluation)."""
    lake = settings.lake
    events = read_events(
        spark, lake.events_path, lake.format, SCORED_EVENT_SCHEMA, lake.compacted_path
    ).select("device_id", "sensor", "event_time", "is_anomaly")
    planted = {r: n for r, n in manifest["counts"]["quarantined"].items() if n}
    quarantined = {r: n for r, n in summary.quarantined.items() if n}
    evaluation = evaluate(events.toPandas(), manifest["anomalies"])
    return ManifestCheck(planted, quarantined, evaluation, device_namer(settings))
