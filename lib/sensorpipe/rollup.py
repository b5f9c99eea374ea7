"""The daily rollup's extract and load (called from jobs/batch_daily_rollup.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sensorpipe.aggregates import daily_aggregates
from sensorpipe.config import Settings
from sensorpipe.schemas import SCORED_EVENT_SCHEMA
from sensorpipe.sinks.lake import read_events
from sensorpipe.sinks.warehouse import DAILY_AGGREGATES, warehouse_from_settings


@dataclass
class RollupResult:
    first: date | None
    last: date | None
    events: int
    rows: int
    warehouse: str

    def render(self) -> str:
        if self.first is None:
            return "daily rollup: the lake holds no events; nothing to do"
        if not self.rows:
            return (
                f"daily rollup {self.first}..{self.last}: the lake holds no events for these "
                "days; the warehouse is left as it is"
            )
        return (
            f"daily rollup {self.first}..{self.last}: {self.events} events -> {self.rows} "
            f"daily rows, replaced atomically in {self.warehouse}"
        )


def run_daily_rollup(
    spark: SparkSession, settings: Settings, first: date | None, last: date | None
) -> RollupResult:
    """Recompute [first, last] (every day in the lake if None) and replace it in the warehouse."""
    lake = settings.lake
    events = read_events(spark, lake.events_path, lake.format, SCORED_EVENT_SCHEMA,
                         lake.compacted_path)  # fmt: skip
    if first is None:
        bounds = events.agg(F.min("event_date"), F.max("event_date")).first()  # bounded: 1 row
        first, last = bounds[0], bounds[1]
        if first is None:
            return RollupResult(None, None, 0, 0, "")
    days = events.where(F.col("event_date").between(F.lit(first), F.lit(last)))
    rows = days.transform(daily_aggregates, accuracy=settings.aggregates.percentile_accuracy)
    # One row per (device, sensor, day): bounded by the fleet, not by events.
    table = rows.toArrow()
    if table.num_rows == 0:
        # Nothing in the lake for these days (a wrong path, data not yet landed, or expired):
        # replacing the range with nothing would delete days the warehouse holds.
        return RollupResult(first, last, 0, 0, "")
    warehouse = warehouse_from_settings(settings.warehouse)
    warehouse.ensure_tables([DAILY_AGGREGATES])
    warehouse.replace_range(DAILY_AGGREGATES, table, first.isoformat(), last.isoformat())
    events_count = sum(table.column("event_count").to_pylist())
    return RollupResult(first, last, events_count, table.num_rows, warehouse.describe())
