"""Warehouse load throughput: rows/s into PostgreSQL through the project's sink (staging COPY +
MERGE + load log, one transaction) against a plain Spark JDBC append of the same rows, in the
same run.

    .venv/bin/python benchmarks/warehouse_load.py [--rows 100000] [--repeats 3]

Needs Debian's JDBC driver for the anchor (apt-get install libpostgresql-jdbc-java).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
from pyspark.sql import functions as F
from sensorpipe.config import load_settings
from sensorpipe.session import build_session
from sensorpipe.sinks.warehouse import MINUTE_AGGREGATES, PostgresWarehouse, Table
from sensorpipe_tools.local_services import Postgres

ROOT = Path(__file__).resolve().parent.parent
JDBC_JAR = Path("/usr/share/java/postgresql.jar")


def synthetic_aggregates(spark, rows: int):
    ids = spark.range(rows)
    return ids.select(
        F.format_string("train-%03d", (F.col("id") % 500).cast("int")).alias("device_id"),
        F.lit("axle_bearing_temp").alias("sensor"),
        (
            F.lit("2026-11-01 00:00:00").cast("timestamp")
            + F.make_dt_interval(F.lit(0), F.lit(0), (F.col("id") / 500).cast("int"))
        ).alias("window_start"),
        (
            F.lit("2026-11-01 00:01:00").cast("timestamp")
            + F.make_dt_interval(F.lit(0), F.lit(0), (F.col("id") / 500).cast("int"))
        ).alias("window_end"),
        F.lit(60).cast("long").alias("event_count"),
        *[
            (F.rand(seed=i) * 100).alias(name)
            for i, name in enumerate(
                [
                    "min_value",
                    "max_value",
                    "sum_value",
                    "mean_value",
                    "stddev_value",
                    "p50_value",
                    "p95_value",
                ]
            )
        ],
        F.lit(0).cast("long").alias("anomaly_count"),
        F.lit(None).cast("double").alias("max_anomaly_score"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not JDBC_JAR.exists():
        raise SystemExit(f"{JDBC_JAR} missing: apt-get install libpostgresql-jdbc-java")
    tmp = Path(tempfile.mkdtemp(prefix="sensorpipe-bench-pg-"))
    tmp.chmod(0o755)
    pg = Postgres.start(tmp / "data")
    settings = load_settings(
        ROOT / "conf/local.yaml",
        environ={"SENSORPIPE__SPARK__CONF": f'{{"spark.driver.extraClassPath": "{JDBC_JAR}"}}'},
    )
    spark = build_session(settings)
    spark.sparkContext.setLogLevel("ERROR")
    frame = synthetic_aggregates(spark, args.rows).cache()
    frame.count()
    anchor_table = Table(
        "jdbc_append_target",
        MINUTE_AGGREGATES.columns,
        key=(),
        dist_key="device_id",
        sort_key=("window_start",),
    )
    warehouse = PostgresWarehouse("127.0.0.1", pg.port, pg.database, pg.user)
    warehouse.ensure_tables([MINUTE_AGGREGATES])
    cols = ", ".join(f"{c.name} {c.postgres}" for c in anchor_table.columns)
    url = f"jdbc:postgresql://127.0.0.1:{pg.port}/{pg.database}"
    sink_rates, jdbc_rates = [], []
    try:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS jdbc_append_target ({cols})")
        for i in range(args.repeats):
            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE sensor_minute_aggregates, jdbc_append_target")
            start = time.perf_counter()
            warehouse.upsert(MINUTE_AGGREGATES, frame.toArrow(), "bench", i)
            sink_rates.append(args.rows / (time.perf_counter() - start))
            start = time.perf_counter()
            frame.write.jdbc(
                url,
                "jdbc_append_target",
                mode="append",
                properties={"user": pg.user, "driver": "org.postgresql.Driver"},
            )
            jdbc_rates.append(args.rows / (time.perf_counter() - start))
            print(
                f"run {i + 1}: sink {sink_rates[-1]:,.0f} rows/s, "
                f"JDBC append {jdbc_rates[-1]:,.0f} rows/s"
            )
    finally:
        spark.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    print(f"\n{args.rows} aggregate rows into PostgreSQL 15, local[2], median of {args.repeats}:")
    print(f"  anchor  Spark JDBC append (no key, no idempotence) {med(jdbc_rates):>9,.0f} rows/s")
    print(
        f"  sink    COPY to staging + MERGE + load log, 1 txn  {med(sink_rates):>9,.0f} rows/s "
        f"({med(sink_rates) / med(jdbc_rates):.2f}x the anchor)"
    )


if __name__ == "__main__":
    main()
