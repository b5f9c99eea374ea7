"""The run summary: what a run of the streaming job read, wrote, quarantined, loaded and sent,
from the queries' progress and the tables' logs; and its lineage record."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from sensorpipe import __version__
from sensorpipe.config import Settings
from sensorpipe.decode import REASONS
from sensorpipe.lineage import LineageRun, schema_fingerprint
from sensorpipe.schemas import QUARANTINE_SCHEMA, SCORED_EVENT_SCHEMA
from sensorpipe.sinks.lake import committed_files, partitions_of
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


def lake_summary(
    spark: SparkSession,
    settings: Settings,
    events: StreamingQuery,
    quarantine: StreamingQuery,
    files_before: tuple[set[str], set[str]],
    queries: list[StreamingQuery],
) -> RunSummary:
    """The events and quarantine queries' part of a run."""
    lake = settings.lake
    events_batches = observed_batches(events)
    quarantine_batches = observed_batches(quarantine)
    events_new = (
        committed_files(spark, lake.events_path, lake.format, SCORED_EVENT_SCHEMA) - files_before[0]
    )
    quarantine_new = (
        committed_files(spark, lake.quarantine_path, lake.format, QUARANTINE_SCHEMA)
        - files_before[1]
    )
    return RunSummary(
        records_in=sum(b["records_in"] for b in events_batches),
        valid=sum(b["valid"] for b in events_batches),
        quarantined={r: sum(b[r] for b in quarantine_batches) for r in REASONS},
        batches=len(events_batches),
        input_rows=sum(p.numInputRows for q in queries for p in q.recentProgress),
        events=TableWrite(lake.events_path, len(events_new), sorted(partitions_of(events_new))),
        quarantine=TableWrite(
            lake.quarantine_path, len(quarantine_new), sorted(partitions_of(quarantine_new))
        ),
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

    from pyspark.sql.streaming import StreamingQueryListener

    class Progress(StreamingQueryListener):
        def onQueryStarted(self, event: Any) -> None:
            pass

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

        def onQueryIdle(self, event: Any) -> None:
            pass

        def onQueryTerminated(self, event: Any) -> None:
            pass

    return Progress()
