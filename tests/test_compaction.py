"""Compaction takes only what the stream committed: from the raw table (its sink log), and on
EMR from the S3DistCp copy made from the committed-files manifest, never from a listing that
includes a killed micro-batch's files; and only once the day's late-data horizon has passed."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from sensorpipe.compaction import (
    CompactionError,
    late_data_horizon,
    run_compaction,
    write_committed_manifest,
)
from sensorpipe.schemas import SCORED_EVENT_SCHEMA
from sensorpipe.sinks.lake import read_table
from sensorpipe_tools.samples import SampleSpec, generate

from tests.local_settings import lake_environ, local_settings, run_job

DAY = date(2026, 11, 1)
ORPHAN = "part-99999-of-a-killed-batch.c000.snappy.parquet"


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """The streaming job's lake, then a killed micro-batch's file beside the committed ones: a
    copy of a committed file (its rows would count twice), not in the sink log."""
    tmp = tmp_path_factory.mktemp("compaction")
    generate(SampleSpec(trains=1, hours=2, anomalies_per_train=0, malformed_per_kind=0),
             tmp / "samples")  # fmt: skip
    environ = {**lake_environ(tmp), "SENSORPIPE__SOURCE__KIND": "replay",
               "SENSORPIPE__SOURCE__REPLAY_PATH": str(tmp / "samples/telemetry")}  # fmt: skip
    assert run_job("stream_sensor_anomalies", ["--config", "conf/local.yaml"], environ) == 0
    settings = local_settings(tmp, SENSORPIPE__LAKE__COMPACTED_PATH=str(tmp / "compacted"))
    committed = read_table(spark, settings.lake.events_path, "parquet", SCORED_EVENT_SCHEMA)
    expected = committed.where(F.col("event_date") == F.lit(DAY)).count()
    hour = next(Path(settings.lake.events_path, f"event_date={DAY}").glob("event_hour=*"))
    shutil.copy(next(hour.glob("*.parquet")), hour / ORPHAN)
    return settings, tmp, expected


def compacted_rows(spark, settings) -> int:
    table = spark.read.parquet(settings.lake.compacted_path)
    return table.where(F.col("event_date") == F.lit(DAY)).count()


def test_compaction_after_a_killed_micro_batch_gives_exactly_the_committed_rows(spark, lake):
    settings, _, expected = lake
    assert expected > 0
    # Listing the day's directory (not the table's root, whose sink log Spark follows) finds
    # the orphan.
    listed = spark.read.parquet(str(Path(settings.lake.events_path, f"event_date={DAY}")))
    assert listed.count() > expected
    result = run_compaction(spark, settings, DAY)
    assert result.rows == compacted_rows(spark, settings) == expected


def copy_like_s3distcp(sources: list[str], table: str, staging: Path) -> None:
    """What S3DistCp does with --src <table>/event_date=DAY/ --dest <staging>/event_date=DAY/:
    each source file to the same path relative to the table."""
    for source in sources:
        path = Path(source.removeprefix("file:"))
        target = staging / path.relative_to(table)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)


def test_s3distcp_from_the_manifest_copies_only_committed_files(spark, lake):
    settings, tmp, expected = lake
    manifest = tmp / "manifests/events" / f"event_date={DAY}.txt"
    count = write_committed_manifest(spark, settings, DAY, str(manifest))
    listed = manifest.read_text().splitlines()
    assert count == len(listed) > 0 and not any(ORPHAN in line for line in listed)
    staging = tmp / "staging/events"
    copy_like_s3distcp(listed, settings.lake.events_path, staging)
    result = run_compaction(spark, settings, DAY, str(staging))
    assert result.rows == compacted_rows(spark, settings) == expected


def test_a_copy_with_an_uncommitted_file_is_refused(spark, lake):
    """The old step (S3DistCp --srcPattern .*\\.parquet) copied the orphan too."""
    settings, tmp, _ = lake
    day_dir = Path(settings.lake.events_path, f"event_date={DAY}")
    every_parquet = [str(p) for p in day_dir.rglob("*.parquet")]
    staging = tmp / "staging-by-pattern/events"
    copy_like_s3distcp(every_parquet, settings.lake.events_path, staging)
    with pytest.raises(CompactionError, match=f"never committed \\(e.g. {ORPHAN}\\)"):
        run_compaction(spark, settings, DAY, str(staging))


def test_a_day_is_compacted_only_after_its_late_data_horizon(spark, lake):
    settings, tmp, _ = lake
    horizon = late_data_horizon(DAY, settings)
    assert horizon == datetime(2026, 11, 2, tzinfo=UTC) + timedelta(
        hours=settings.decode.max_event_lag_hours
    )
    early = horizon - timedelta(minutes=1)
    with pytest.raises(CompactionError, match="can be compacted from 2026-11-09T00:00Z"):
        run_compaction(spark, settings, DAY, now=early)
    with pytest.raises(CompactionError, match="late-data horizon"):
        write_committed_manifest(spark, settings, DAY, str(tmp / "early.txt"), now=early)
    assert not (tmp / "early.txt").exists()
    assert run_compaction(spark, settings, DAY, now=horizon).rows > 0


def test_the_job_refuses_a_day_too_early_and_records_the_run_as_failed(lake, capsys):
    from sensorpipe.lineage import load_runs

    settings, tmp, _ = lake
    environ = {**lake_environ(tmp), "SENSORPIPE__LAKE__COMPACTED_PATH": str(tmp / "compacted")}
    today = datetime.now(UTC).date().isoformat()
    argv = ["--config", "conf/local.yaml", "--date", today]
    assert run_job("compact_lake", argv, environ) == 2
    assert "late-data horizon" in capsys.readouterr().err
    runs = [r for r in load_runs(settings.lineage) if r["job"] == "compact_lake"]
    assert runs and runs[-1]["status"] == "failed" and "CompactionError" in runs[-1]["error"]


def test_the_sink_log_forgets_old_files_and_readers_take_those_days_from_the_compacted_table(
    spark, tmp_path
):
    """The file sink's log listed every file the stream ever wrote (each of its compactions,
    and each side-query batch, read them all). With `lake.sink_log_retention` it forgets files
    committed longer ago; the batch readers (`read_events`) then take those days from the
    compacted table, whose compaction ran before the raw files left the log."""
    from sensorpipe.sinks.lake import compacted_days, read_events
    from sensorpipe.sinks.sink_log import files_through, latest_batch, sink_log_of
    from sensorpipe.streaming import run_lake_job

    from tests.conftest import spark_conf

    samples = tmp_path / "samples"
    generate(SampleSpec(trains=1, hours=2, anomalies_per_train=0, malformed_per_kind=0,
                        oversize_records=0), samples)  # fmt: skip
    settings = local_settings(
        tmp_path,
        SENSORPIPE__SOURCE__KIND="replay",
        SENSORPIPE__SOURCE__REPLAY_PATH=str(samples / "telemetry"),
        SENSORPIPE__LAKE__COMPACTED_PATH=str(tmp_path / "compacted"),
        SENSORPIPE__LAKE__SINK_LOG_RETENTION="2s",
    )
    lake = settings.lake
    # Every batch a compaction of the sink log, so the test sees one without ten batches.
    with spark_conf(spark, spark__sql__streaming__fileSink__log__compactInterval="1"):
        first = run_lake_job(spark, settings)
        assert run_compaction(spark, settings, DAY).rows == first.valid
        time.sleep(3)  # day 1's files are now older than the retention
        later = date(2026, 11, 5)
        generate(SampleSpec(trains=1, hours=2, anomalies_per_train=0, malformed_per_kind=0,
                            oversize_records=0, start=f"{later}T00:00:00+00:00"),
                 samples)  # fmt: skip
        second = run_lake_job(spark, settings)
    assert second.reconciled, second.problems
    log = sink_log_of(lake.events_path)
    listed = files_through(log, latest_batch(log))
    assert listed and not [f for f in listed if f"event_date={DAY}" in f], "the log kept day 1"
    raw = read_table(spark, lake.events_path, lake.format, SCORED_EVENT_SCHEMA)
    assert raw.where(F.col("event_date") == F.lit(DAY)).count() == 0
    assert compacted_days(lake.compacted_path) == [DAY.isoformat()]
    events = read_events(spark, lake.events_path, lake.format, SCORED_EVENT_SCHEMA,
                         lake.compacted_path)  # fmt: skip
    by_day = {r.event_date: r["count"] for r in events.groupBy("event_date").count().collect()}
    assert by_day == {DAY: first.valid, later: second.valid}
