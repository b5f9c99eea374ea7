"""Every reader of the lake takes only the files the sink's log committed: a complete orphan
(a killed batch's file, readable, with rows of its own) is on disk beside the committed ones
while the aggregates and alerts queries and the daily rollup read the table."""

from __future__ import annotations

import shutil
from pathlib import Path

from pyspark.sql import functions as F
from sensorpipe.rollup import run_daily_rollup
from sensorpipe.schemas import SCORED_EVENT_SCHEMA
from sensorpipe.sinks.lake import read_table
from sensorpipe.streaming import run as run_module
from sensorpipe.streaming import run_lake_job
from sensorpipe_tools.samples import SampleSpec, generate

from tests.local_settings import local_settings


def events_counted(postgres, database: str, table: str) -> int:
    import psycopg

    with psycopg.connect(f"{postgres.dsn.rsplit(' ', 1)[0]} dbname={database}") as conn:
        return int(conn.execute(f"SELECT sum(event_count) FROM {table}").fetchone()[0])


def test_side_queries_and_rollup_take_no_file_the_sink_log_does_not_list(
    spark, tmp_path, postgres, warehouse_db, monkeypatch
):
    samples = tmp_path / "samples"
    generate(SampleSpec(trains=1, hours=20, anomalies_per_train=2, malformed_per_kind=0,
                        oversize_records=0), samples)  # fmt: skip
    settings = local_settings(
        tmp_path,
        SENSORPIPE__SOURCE__KIND="replay",
        SENSORPIPE__SOURCE__REPLAY_PATH=str(samples / "telemetry"),
        SENSORPIPE__WAREHOUSE__KIND="postgres",
        SENSORPIPE__WAREHOUSE__PORT=str(postgres.port),
        SENSORPIPE__WAREHOUSE__DATABASE=warehouse_db,
        SENSORPIPE__ALERTS__KIND="outbox",
        SENSORPIPE__ALERTS__OUTBOX_PATH=str(tmp_path / "outbox"),
    )
    events_path = Path(settings.lake.events_path)
    orphans: list[Path] = []
    start_side_queries = run_module.start_side_queries

    def with_orphans(*args, **kwargs):  # noqa: ANN202
        # A killed batch's files: copies of committed ones (every row and anomaly again),
        # complete and readable, that no sink log entry names.
        for n, committed in enumerate(sorted(events_path.rglob("part-*.parquet"))):
            orphan = committed.with_name(f"part-9{n:04d}-of-a-killed-batch.c000.snappy.parquet")
            shutil.copy(committed, orphan)
            orphans.append(orphan)
        return start_side_queries(*args, **kwargs)

    monkeypatch.setattr(run_module, "start_side_queries", with_orphans)
    summary = run_lake_job(spark, settings)
    assert orphans and summary.reconciled, summary.problems
    listed = spark.read.parquet(*[str(p) for p in events_path.glob("event_date=*")])
    assert listed.count() == 2 * summary.valid  # the orphans are there to be taken

    committed = read_table(spark, str(events_path), "parquet", SCORED_EVENT_SCHEMA)
    anomalous = committed.where("is_anomaly OR alert_action IS NOT NULL")
    assert anomalous.where("alert_action IS NOT NULL").count() > 0
    assert events_counted(postgres, warehouse_db, "sensor_minute_aggregates") == summary.valid
    anomalies = spark.read.parquet(settings.lake.anomalies_path)
    assert anomalies.count() == anomalous.count()
    assert summary.alert_transitions == anomalous.where(F.col("alert_action").isNotNull()).count()

    assert run_daily_rollup(spark, settings, None, None).events == summary.valid
    assert events_counted(postgres, warehouse_db, "sensor_daily_aggregates") == summary.valid
