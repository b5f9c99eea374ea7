"""`sensorpipe watch` (`make watch`): watch the pipeline work, for a newcomer.

Starts kinesalite and PostgreSQL, replays the samples into Kinesis paced at `--rate` records a
second (event times moved to now), runs the streaming job continuously (1 s trigger, the
alerts' fast path, the warehouse loads) and serves the operations page (`sensorpipe view`)
reading the warehouse with its read-only login. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def grant_read_only(settings: Any, environ: dict[str, str] | None = None) -> None:
    """As the warehouse's writer: create the job's tables and the view's read-only login
    (PostgreSQL; on Redshift, docs/view.md gives the grants)."""
    import psycopg
    from sensorpipe.sinks.warehouse import warehouse_from_settings
    from sensorpipe.streaming.run import WAREHOUSE_TABLES

    from sensorpipe_tools.view import VIEWED_TABLES, read_only_grants

    warehouse = warehouse_from_settings(settings.warehouse, environ)
    warehouse.ensure_tables(WAREHOUSE_TABLES)
    w = settings.warehouse
    with psycopg.connect(
        host=w.host, port=w.port, dbname=w.database, user=w.user, password=warehouse.password,
        sslmode=w.sslmode, autocommit=True,
    ) as conn:  # fmt: skip
        for sql in read_only_grants(settings.view.user, VIEWED_TABLES, w.user):
            conn.execute(sql)


def watch(samples: str, rate: float, port: int, seconds: float | None, workdir: Path) -> int:
    import boto3
    from sensorpipe.config import load_settings
    from sensorpipe.session import build_session
    from sensorpipe.streaming import start_lake_run

    from sensorpipe_tools.local_services import (
        Kinesalite,
        Postgres,
        local_aws_environment,
    )
    from sensorpipe_tools.local_settings import lake_environ
    from sensorpipe_tools.producer import produce, rebased, sample_records
    from sensorpipe_tools.view import reader_from_settings, serve

    for key, value in local_aws_environment().items():
        os.environ.setdefault(key, value)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    pg_dir = Path(tempfile.mkdtemp(prefix="sensorpipe-watch-pg-"))
    pg_dir.chmod(0o755)
    started: list[Any] = []
    run = spark = server = None
    try:
        kinesalite = Kinesalite.start(log_path=workdir / "kinesalite.log")
        started.append(kinesalite.stop)
        postgres = Postgres.start(pg_dir / "data")
        started.append(postgres.stop)
        kinesis = boto3.client(
            "kinesis", endpoint_url=kinesalite.endpoint_url, region_name="us-east-1"
        )
        kinesis.create_stream(StreamName="train-telemetry", ShardCount=2)
        kinesis.get_waiter("stream_exists").wait(StreamName="train-telemetry")
        settings = load_settings(
            ROOT / "conf/local.yaml",
            environ={
                **lake_environ(workdir),
                "SENSORPIPE__SOURCE__ENDPOINT_URL": kinesalite.endpoint_url,
                "SENSORPIPE__WAREHOUSE__KIND": "postgres",
                "SENSORPIPE__WAREHOUSE__PORT": str(postgres.port),
                "SENSORPIPE__ALERTS__KIND": "outbox",
                "SENSORPIPE__ALERTS__OUTBOX_PATH": str(workdir / "outbox"),
                "SENSORPIPE__STREAM__TRIGGER": "1 second",
                "SENSORPIPE__STREAM__SIDE_TRIGGER": "5 seconds",
                "SENSORPIPE__STREAM__QUERY_PREFIX": "watch",
            },
        )
        grant_read_only(settings)
        server = serve(reader_from_settings(settings), settings.view, port=port)
        records = rebased(sample_records(samples), datetime.now(UTC))
        print(f"operations page: {server.url}  (Ctrl-C stops everything)", flush=True)
        print(f"replaying {len(records):,} sample records at {rate:,.0f}/s", flush=True)

        def replay() -> None:
            stats = produce(kinesis, "train-telemetry", records, rate=rate)
            print(f"replay done: {stats.user_records:,} records in {stats.seconds:.0f} s; the "
                  "page stays live until Ctrl-C", flush=True)  # fmt: skip

        threading.Thread(target=replay, name="replay", daemon=True).start()
        spark = build_session(settings)
        spark.sparkContext.setLogLevel("ERROR")
        run = start_lake_run(spark, settings)
        deadline = time.monotonic() + seconds if seconds else None
        while deadline is None or time.monotonic() < deadline:
            for query in run.queries:
                if query.exception() is not None:
                    raise RuntimeError(f"query {query.name} failed: {query.exception()}")
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
    finally:
        if run is not None:
            run.stop()
        if spark is not None:
            spark.stop()
        if server is not None:
            server.stop()
        for stop in reversed(started):
            stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
    return 0
