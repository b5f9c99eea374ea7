"""The warehouse sink and the daily rollup on a real PostgreSQL; the Redshift dialect's SQL
parsed with sqlglot's Redshift dialect; its Data API and S3 staging against moto (a mock)."""

import threading
import time
from datetime import datetime
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest
import sqlglot
from pyspark.errors import StreamingQueryException
from sensorpipe.rollup import run_daily_rollup
from sensorpipe.sinks.warehouse import (
    DAILY_AGGREGATES,
    LOAD_LOG_TABLE,
    MINUTE_AGGREGATES,
    PostgresWarehouse,
    RedshiftWarehouse,
    create_table_sql,
    replace_statements,
    upsert_statements,
)
from sensorpipe.streaming import run_lake_job

from tests.local_settings import local_settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
EXACT = ["event_count", "min_value", "max_value", "sum_value"]


def settings_for(tmp: Path, postgres, database: str, **extra: str):
    overrides = {
        "SENSORPIPE__SOURCE__KIND": "replay",
        "SENSORPIPE__SOURCE__REPLAY_PATH": str(SAMPLES / "telemetry"),
        "SENSORPIPE__WAREHOUSE__KIND": "postgres",
        "SENSORPIPE__WAREHOUSE__PORT": str(postgres.port),
        "SENSORPIPE__WAREHOUSE__DATABASE": database,
        # Five readings a window (samples are one a minute), so percentiles mean something.
        "SENSORPIPE__AGGREGATES__WINDOW": "5 minutes",
    }
    return local_settings(tmp, **{**overrides, **extra})


def warehouse_rows(postgres, database: str, table: str, order: str) -> list[tuple]:
    with psycopg.connect(f"{postgres.dsn.rsplit(' ', 1)[0]} dbname={database}") as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()


def load_log(postgres, database: str) -> list[tuple]:
    return warehouse_rows(postgres, database, "sensorpipe_load_log", "query_name, batch_id")


def recompute_from_lake(spark, settings) -> dict[tuple, dict]:
    """Every window's statistics computed here in pandas from the lake's events, independently
    of the code under test (sensorpipe.aggregates: it once recomputed them with the same
    window_aggregates, which could not disagree with itself; issue 30's test audit): count,
    min, max, sum, mean, sample standard deviation, the exact order statistics p50 and p95
    (the smallest value whose rank reaches p * n), anomalies flagged and the highest score."""
    import math

    import pandas as pd

    events = spark.read.parquet(settings.lake.events_path).select(
        "device_id", "sensor", "event_time", "value", "is_anomaly", "anomaly_score"
    ).toPandas()
    minutes = int(settings.aggregates.window.split()[0])
    events["window_start"] = pd.to_datetime(events["event_time"]).dt.floor(f"{minutes}min")
    expected = {}
    for (device, sensor, start), g in events.groupby(["device_id", "sensor", "window_start"]):
        values = sorted(g["value"].tolist())
        n = len(values)

        def order_statistic(p: float, values: list = values, n: int = n) -> float:
            return values[max(math.ceil(p * n), 1) - 1]

        expected[(device, sensor, start.to_pydatetime().replace(tzinfo=None))] = {
            "event_count": n, "min_value": values[0], "max_value": values[-1],
            "sum_value": math.fsum(values), "mean_value": math.fsum(values) / n,
            "stddev_value": g["value"].std(ddof=1) if n > 1 else None,
            "p50_value": order_statistic(0.5), "p95_value": order_statistic(0.95),
            "anomaly_count": int(g["is_anomaly"].sum()),
            "max_anomaly_score": float(g["anomaly_score"].max()),
        }  # fmt: skip
    return expected


def assert_warehouse_equals_lake(spark, settings, postgres, database):
    cols = [c.name for c in MINUTE_AGGREGATES.columns]
    stored = {
        (r[0], r[1], r[2].replace(tzinfo=None)): dict(zip(cols, r, strict=True))
        for r in warehouse_rows(
            postgres, database, "sensor_minute_aggregates", "device_id, sensor, window_start"
        )
    }
    expected = recompute_from_lake(spark, settings)
    assert stored.keys() == expected.keys()
    assert any(row["anomaly_count"] for row in expected.values())  # the samples flag some
    for key, row in expected.items():
        got = stored[key]
        for col in ("event_count", "min_value", "max_value", "p50_value", "p95_value",
                    "anomaly_count"):  # fmt: skip
            assert got[col] == row[col], (key, col)
        for col in ("sum_value", "mean_value", "max_anomaly_score"):
            assert got[col] == pytest.approx(row[col], rel=1e-12, abs=1e-9), (key, col)
        if row["stddev_value"] is None:
            assert got["stddev_value"] is None, key
        else:
            assert got["stddev_value"] == pytest.approx(row["stddev_value"], rel=1e-9), key


def test_streaming_aggregates_equal_a_batch_recomputation_from_the_lake(
    spark, tmp_path, postgres, warehouse_db
):
    settings = settings_for(tmp_path, postgres, warehouse_db)
    summary = run_lake_job(spark, settings)
    # The aggregates load at least a batch with data and the no-data batch that advances the
    # watermark past the last windows.
    assert summary.reconciled and summary.aggregate_batches_loaded >= 2
    assert_warehouse_equals_lake(spark, settings, postgres, warehouse_db)


def test_aggregates_hold_only_the_keys_the_scorer_holds(spark, tmp_path, postgres, warehouse_db):
    """Issue 30: the aggregates' state bounded as the scorer's is. With room for two live keys,
    a train's other sensors land in the lake unscored and get no aggregate state (before, every
    key a producer sent held a row per window in the aggregates query)."""
    from sensorpipe_tools.samples import SampleSpec, generate

    samples = tmp_path / "samples"
    generate(SampleSpec(trains=1, hours=1, anomalies_per_train=0, malformed_per_kind=0,
                        oversize_records=0), samples)  # fmt: skip
    settings = settings_for(
        tmp_path, postgres, warehouse_db,
        SENSORPIPE__SOURCE__REPLAY_PATH=str(samples / "telemetry"),
        SENSORPIPE__ANOMALY__MAX_LIVE_KEYS="2", SENSORPIPE__ANOMALY__STATE_BUCKETS="1",
    )  # fmt: skip
    summary = run_lake_job(spark, settings)
    events = spark.read.parquet(settings.lake.events_path)
    lake_keys = {(r.device_id, r.sensor) for r in events.select("device_id", "sensor").collect()}
    scored = events.where("is_anomaly IS NOT NULL")
    scored_keys = {(r.device_id, r.sensor) for r in scored.select("device_id", "sensor").collect()}
    assert summary.unscored > 0 and len(scored_keys) == 2 and len(lake_keys) > 2
    rows = warehouse_rows(postgres, warehouse_db, "sensor_minute_aggregates", "device_id, sensor")
    cols = [c.name for c in MINUTE_AGGREGATES.columns]
    rows = [dict(zip(cols, r, strict=True)) for r in rows]
    assert {(r["device_id"], r["sensor"]) for r in rows} == scored_keys
    assert sum(r["event_count"] for r in rows) == scored.count()


def test_replayed_micro_batches_leave_the_warehouse_unchanged(
    spark, tmp_path, postgres, warehouse_db
):
    settings = settings_for(tmp_path, postgres, warehouse_db)
    run_lake_job(spark, settings)
    before = warehouse_rows(
        postgres, warehouse_db, "sensor_minute_aggregates", "device_id, sensor, window_start"
    )
    log_before = load_log(postgres, warehouse_db)
    # Forget that the last two batches committed: Spark replays them with the same batch ids.
    commits = Path(settings.lake.checkpoint_root) / "aggregates" / "commits"
    last = sorted(int(p.name) for p in commits.iterdir() if p.name.isdigit())[-1]
    (commits / str(last)).unlink()
    (commits / f".{last}.crc").unlink(missing_ok=True)
    replay = run_lake_job(spark, settings)
    assert replay.aggregate_batches_loaded >= 1, "the forgotten batch was run again"
    assert (
        warehouse_rows(
            postgres, warehouse_db, "sensor_minute_aggregates", "device_id, sensor, window_start"
        )
        == before
    )
    assert load_log(postgres, warehouse_db) == log_before


def test_sink_upsert_is_idempotent_per_batch_and_updates_by_key(postgres, warehouse_db):
    wh = PostgresWarehouse("127.0.0.1", postgres.port, warehouse_db, postgres.user)
    wh.ensure_tables([MINUTE_AGGREGATES])

    def rows(count: int, value: float) -> pa.Table:
        base = {c.name: [None] for c in MINUTE_AGGREGATES.columns}
        base.update(
            device_id=["train-01"],
            sensor=["wheel_speed"],
            window_start=[datetime(2026, 11, 1, 8, 0)],
            window_end=[datetime(2026, 11, 1, 8, 1)],
            event_count=[count],
            min_value=[value],
            max_value=[value],
            sum_value=[value * count],
        )
        return pa.table(base)

    wh.upsert(MINUTE_AGGREGATES, rows(3, 1.0), "q", 0)
    wh.upsert(MINUTE_AGGREGATES, rows(99, 9.0), "q", 0)  # a replay of batch 0: ignored
    stored = warehouse_rows(postgres, warehouse_db, "sensor_minute_aggregates", "device_id")
    assert [(r[4], r[5]) for r in stored] == [(3, 1.0)]
    wh.upsert(MINUTE_AGGREGATES, rows(5, 2.0), "q", 1)  # the window updated by batch 1
    stored = warehouse_rows(postgres, warehouse_db, "sensor_minute_aggregates", "device_id")
    assert [(r[4], r[5]) for r in stored] == [(5, 2.0)]
    assert [(r[0], r[1], r[2]) for r in load_log(postgres, warehouse_db)] == [
        ("q", 0, 1),
        ("q", 1, 1),
    ]


def test_daily_rollup_rerun_leaves_the_warehouse_unchanged(spark, tmp_path, postgres, warehouse_db):
    settings = settings_for(tmp_path, postgres, warehouse_db, SENSORPIPE__WAREHOUSE__KIND="none")
    run_lake_job(spark, settings)
    settings = settings_for(tmp_path, postgres, warehouse_db)
    first = run_daily_rollup(spark, settings, None, None)
    assert first.events == 43200 and first.rows == 2 * 20  # two days x 20 series
    rows = warehouse_rows(
        postgres, warehouse_db, "sensor_daily_aggregates", "device_id, sensor, event_date"
    )
    again = run_daily_rollup(spark, settings, first.first, first.last)
    assert again.rows == first.rows
    assert (
        warehouse_rows(
            postgres, warehouse_db, "sensor_daily_aggregates", "device_id, sensor, event_date"
        )
        == rows
    )
    # One day alone replaces that day only.
    run_daily_rollup(spark, settings, first.last, first.last)
    assert (
        warehouse_rows(
            postgres, warehouse_db, "sensor_daily_aggregates", "device_id, sensor, event_date"
        )
        == rows
    )
    # A range with no events in the lake (data not landed yet, or expired) deletes nothing.
    (tmp_path / "empty-lake").mkdir()
    empty = settings_for(
        tmp_path / "elsewhere", postgres, warehouse_db,
        SENSORPIPE__LAKE__EVENTS_PATH=str(tmp_path / "empty-lake"),
    )  # fmt: skip
    nothing = run_daily_rollup(spark, empty, first.first, first.last)
    assert (
        warehouse_rows(
            postgres, warehouse_db, "sensor_daily_aggregates", "device_id, sensor, event_date"
        )
        == rows
    )
    assert (nothing.events, nothing.rows) == (0, 0) and "left as it is" in nothing.render()
    lake = spark.read.parquet(settings.lake.events_path)
    by_day = {
        (r.device_id, r.sensor, r.event_date): r["count"]
        for r in lake.groupBy("device_id", "sensor", "event_date").count().collect()
    }
    assert {(r[0], r[1], r[2]): r[3] for r in rows} == by_day


@pytest.mark.slow
def test_postgres_stopped_mid_run_fails_clearly_and_a_restart_completes(
    spark, tmp_path, postgres, warehouse_db
):
    settings = settings_for(
        tmp_path,
        postgres,
        warehouse_db,
        # Several batches over hour files in any order: a watermark of days drops nothing.
        SENSORPIPE__AGGREGATES__MAX_FILES_PER_TRIGGER="4",
        SENSORPIPE__AGGREGATES__WATERMARK="3 days",
    )
    stopped = threading.Event()

    def stop_after_two_loads() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if len(load_log(postgres, warehouse_db)) >= 2:
                    postgres.pause()
                    stopped.set()
                    return
            except psycopg.Error:
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=stop_after_two_loads)
    watcher.start()
    try:
        with pytest.raises(
            StreamingQueryException,
            match=r"warehouse PostgreSQL 127\.0\.0\.1:"
            r"\d+/\w+ unavailable loading batch",
        ):
            run_lake_job(spark, settings)
    finally:
        watcher.join()
        if stopped.is_set():
            postgres.resume()
    assert stopped.is_set()
    run_lake_job(spark, settings)
    assert_warehouse_equals_lake(spark, settings, postgres, warehouse_db)
    log = load_log(postgres, warehouse_db)
    assert len({(r[0], r[1]) for r in log}) == len(log)


def redshift_statements() -> list[str]:
    sqls = [
        create_table_sql(t, "redshift")
        for t in (MINUTE_AGGREGATES, DAILY_AGGREGATES, LOAD_LOG_TABLE)
    ]
    sqls += upsert_statements(MINUTE_AGGREGATES, "sensorpipe_aggregates", 42)
    sqls += replace_statements(DAILY_AGGREGATES, "2026-11-01", "2026-11-02")
    sqls.append(
        "COPY sensorpipe_stage FROM 's3://b/staging/batch=42/' "
        "IAM_ROLE 'arn:aws:iam::000000000000:role/copy' FORMAT AS PARQUET"
    )
    return sqls


@pytest.mark.parametrize("sql", redshift_statements(), ids=lambda s: s[:40])
def test_redshift_sql_parses_in_the_redshift_dialect(sql):
    parsed = sqlglot.parse_one(sql, read="redshift", error_level=sqlglot.ErrorLevel.RAISE)
    assert parsed is not None


def test_redshift_tables_have_sort_and_distribution_keys():
    sql = create_table_sql(MINUTE_AGGREGATES, "redshift")
    assert "DISTKEY(device_id)" in sql and "SORTKEY(window_start, device_id)" in sql
    assert "PRIMARY KEY (device_id, sensor, window_start)" in sql


def redshift_with_stubbed_data_api(moto_server):
    """S3 staging against moto's server; the Data API through botocore's Stubber, which checks
    every request against the service model (moto 5.2.5 does not implement
    BatchExecuteStatement: its server answers 500 NotImplementedError)."""
    import boto3
    from botocore.stub import Stubber

    kwargs = {"endpoint_url": moto_server, "region_name": "us-east-1"}
    s3 = boto3.client("s3", **kwargs)
    s3.create_bucket(Bucket="stage-bucket")
    data_api = boto3.client("redshift-data", region_name="us-east-1")
    wh = RedshiftWarehouse(
        data_api=data_api,
        s3=s3,
        database="telemetry",
        iam_role="arn:aws:iam::000000000000:role/copy",
        staging_uri="s3://stage-bucket/wh",
        workgroup_name="sensorpipe-wg",
        secret_arn="arn:aws:secretsmanager:us-east-1:000000000000:secret:x",
        poll_seconds=0.01,
    )
    return wh, s3, Stubber(data_api)


def expect_batch(stubber, statuses, error=None):
    from botocore.stub import ANY

    stubber.add_response(
        "batch_execute_statement",
        {"Id": "stmt-1"},
        {
            "Sqls": ANY,
            "Database": "telemetry",
            "WorkgroupName": "sensorpipe-wg",
            "SecretArn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:x",
        },
    )
    for status in statuses:
        response = {"Id": "stmt-1", "Status": status}
        if error and status == "FAILED":
            response["Error"] = error
        stubber.add_response("describe_statement", response, {"Id": "stmt-1"})


def test_redshift_data_api_mock_and_s3_staging_moto_mock(moto_server):
    import pyarrow.parquet as pq

    wh, s3, stubber = redshift_with_stubbed_data_api(moto_server)
    rows = pa.table({c.name: [None] for c in MINUTE_AGGREGATES.columns}).set_column(
        0, "device_id", pa.array(["train-01"])
    )
    with stubber:
        expect_batch(stubber, ["FINISHED"])
        wh.ensure_tables([MINUTE_AGGREGATES])
        expect_batch(stubber, ["SUBMITTED", "STARTED", "FINISHED"])
        wh.upsert(MINUTE_AGGREGATES, rows, "sensorpipe_aggregates", 7)
        stubber.assert_no_pending_responses()
    key = "wh/sensor_minute_aggregates/sensorpipe_aggregates/batch=7/part-0.parquet"
    body = s3.get_object(Bucket="stage-bucket", Key=key)["Body"].read()
    staged = pq.read_table(pa.BufferReader(body))
    assert staged.column("device_id").to_pylist() == ["train-01"]
    sqls = wh.executed[-1]
    assert sqls[1] == (
        "COPY sensorpipe_stage FROM 's3://stage-bucket/wh/sensor_minute_aggregates"
        "/sensorpipe_aggregates/batch=7/' IAM_ROLE "
        "'arn:aws:iam::000000000000:role/copy' FORMAT AS PARQUET"
    )
    assert sqls[2:5] == upsert_statements(MINUTE_AGGREGATES, "sensorpipe_aggregates", 7)
    for sql in sqls:
        sqlglot.parse_one(sql, read="redshift", error_level=sqlglot.ErrorLevel.RAISE)


def test_redshift_failed_statement_raises_a_clear_error_mock(moto_server):
    from sensorpipe.sinks.warehouse import WarehouseError

    wh, _, stubber = redshift_with_stubbed_data_api(moto_server)
    rows = pa.table({c.name: [None] for c in MINUTE_AGGREGATES.columns})
    with stubber:
        expect_batch(stubber, ["STARTED", "FAILED"], error="ERROR: permission denied")
        with pytest.raises(WarehouseError, match="loading batch 3 of q FAILED: ERROR: permission"):
            wh.upsert(MINUTE_AGGREGATES, rows, "q", 3)


def test_a_new_aggregates_checkpoint_loads_its_batches_though_their_ids_restart(
    spark, tmp_path, postgres, warehouse_db
):
    """Rebuilding the warehouse from the lake: the aggregates table emptied and the query's
    checkpoint removed. The new checkpoint's batch ids start at 0 again; the load log must not
    take them for the old checkpoint's batches and skip them (the table stayed empty)."""
    import shutil

    settings = settings_for(tmp_path, postgres, warehouse_db)
    run_lake_job(spark, settings)
    assert_warehouse_equals_lake(spark, settings, postgres, warehouse_db)
    first_log = load_log(postgres, warehouse_db)
    with psycopg.connect(f"{postgres.dsn.rsplit(' ', 1)[0]} dbname={warehouse_db}") as conn:
        conn.execute("DELETE FROM sensor_minute_aggregates")
    shutil.rmtree(Path(settings.lake.checkpoint_root) / "aggregates")
    run_lake_job(spark, settings)
    assert_warehouse_equals_lake(spark, settings, postgres, warehouse_db)
    log = load_log(postgres, warehouse_db)
    assert len(log) > len(first_log)  # the new checkpoint's batches, not skipped
    assert len({r[0] for r in log}) == 2  # one log name per checkpoint
