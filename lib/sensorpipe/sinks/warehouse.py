"""The warehouse: Redshift on AWS, PostgreSQL locally, the same staging + MERGE + load-log
transaction on both.

A micro-batch of aggregates is loaded in one transaction: rows go to a staging table (COPY from
Parquet in S3 on Redshift, COPY FROM STDIN on PostgreSQL); staging is emptied if the load log
already has this (query, batch id), which makes a replayed batch change nothing; MERGE upserts
by key; the load log records the batch. A daily rollup replaces its days in one transaction.
"""

from __future__ import annotations

import io
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from sensorpipe.sinks.sink_log import checkpoint_query_id

LOAD_LOG = "sensorpipe_load_log"
STAGE = "sensorpipe_stage"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_:.\-]{0,127}$")


class WarehouseError(RuntimeError):
    """A load failed; nothing of the batch was committed and it can be re-run."""


@dataclass(frozen=True)
class Column:
    name: str
    postgres: str
    redshift: str


def _double(name: str) -> Column:
    return Column(name, "DOUBLE PRECISION", "DOUBLE PRECISION")


def _bigint(name: str) -> Column:
    return Column(name, "BIGINT", "BIGINT")


def _text(name: str) -> Column:
    return Column(name, "VARCHAR(64)", "VARCHAR(64)")


def _timestamp(name: str) -> Column:
    return Column(name, "TIMESTAMP", "TIMESTAMP")


_VALUE_STATS = [
    _bigint("event_count"),
    _double("min_value"),
    _double("max_value"),
    _double("sum_value"),
    _double("mean_value"),
    _double("stddev_value"),
    _double("p50_value"),
    _double("p95_value"),
    _bigint("anomaly_count"),
    _double("max_anomaly_score"),
]


@dataclass(frozen=True)
class Table:
    name: str
    columns: Sequence[Column]
    key: Sequence[str]
    dist_key: str
    sort_key: Sequence[str]
    # A rollup replaces a range of this column rather than merging rows.
    range_column: str | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


MINUTE_AGGREGATES = Table(
    "sensor_minute_aggregates",
    [
        _text("device_id"),
        _text("sensor"),
        _timestamp("window_start"),
        _timestamp("window_end"),
        *_VALUE_STATS,
    ],
    key=("device_id", "sensor", "window_start"),
    dist_key="device_id",
    sort_key=("window_start", "device_id"),
)

DAILY_AGGREGATES = Table(
    "sensor_daily_aggregates",
    [_text("device_id"), _text("sensor"), Column("event_date", "DATE", "DATE"), *_VALUE_STATS],
    key=("device_id", "sensor", "event_date"),
    dist_key="device_id",
    sort_key=("event_date", "device_id"),
    range_column="event_date",
)

# Every incident transition of the trains (open, escalate, close), written by the alerts path
# in the same micro-batch as the shadow update; keyed by the transition, so the fast path and
# the alerts query, or a replayed batch, leave one row each. The hospital's never come here.
INCIDENTS = Table(
    "incidents",
    [
        Column("alert_id", "VARCHAR(160)", "VARCHAR(160)"),
        Column("action", "VARCHAR(16)", "VARCHAR(16)"),
        _timestamp("event_time"),
        _text("device_id"),
        _text("sensor"),
        Column("severity", "VARCHAR(16)", "VARCHAR(16)"),
        _timestamp("opened_at"),
        _double("score"),
        _double("value"),
        _double("expected_low"),
        _double("expected_high"),
        # How the reading was anomalous (anomaly/incidents.py, explain): above or below the
        # expected range, and how far in half-widths of it; null on a close.
        Column("direction", "VARCHAR(8)", "VARCHAR(8)"),
        _double("strength"),
        # When Kinesis received the reading (its ApproximateArrivalTimestamp).
        _timestamp("arrival_time"),
    ],
    key=("alert_id", "action", "event_time"),
    dist_key="device_id",
    sort_key=("event_time", "device_id"),
)

LOAD_LOG_COLUMNS = [
    Column("query_name", "VARCHAR(128)", "VARCHAR(128)"),
    _bigint("batch_id"),
    _bigint("rows_loaded"),
    Column("loaded_at", "TIMESTAMP", "TIMESTAMP"),
]


def create_table_sql(table: Table, dialect: str) -> str:
    cols = ", ".join(f"{c.name} {getattr(c, dialect)}" for c in table.columns)
    sql = f"CREATE TABLE IF NOT EXISTS {table.name} ({cols}, PRIMARY KEY ({', '.join(table.key)}))"
    if dialect == "redshift":
        sql += f" DISTKEY({table.dist_key}) SORTKEY({', '.join(table.sort_key)})"
    return sql


LOAD_LOG_TABLE = Table(
    LOAD_LOG,
    LOAD_LOG_COLUMNS,
    key=("query_name", "batch_id"),
    dist_key="query_name",
    sort_key=("loaded_at",),
)


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise WarehouseError(f"query name {name!r}: expected letters, digits, _ : . -")
    return name


def upsert_statements(table: Table, query_name: str, batch_id: int) -> list[str]:
    """After staging: the statements, identical on Redshift and PostgreSQL, that make the load
    idempotent per (query, batch id) and upsert by the table's key."""
    logged = (
        f"SELECT 1 FROM {LOAD_LOG} AS l WHERE l.query_name = '{_checked(query_name)}' "
        f"AND l.batch_id = {int(batch_id)}"
    )
    on = " AND ".join(f"t.{k} = s.{k}" for k in table.key)
    updates = ", ".join(f"{c} = s.{c}" for c in table.column_names if c not in table.key)
    cols = ", ".join(table.column_names)
    values = ", ".join(f"s.{c}" for c in table.column_names)
    return [
        f"DELETE FROM {STAGE} WHERE EXISTS ({logged})",
        f"MERGE INTO {table.name} AS t USING {STAGE} AS s ON {on} "
        f"WHEN MATCHED THEN UPDATE SET {updates} "
        f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})",
        f"INSERT INTO {LOAD_LOG} (query_name, batch_id, rows_loaded, loaded_at) "
        f"SELECT '{query_name}', {int(batch_id)}, (SELECT COUNT(*) FROM {STAGE}), "
        f"CURRENT_TIMESTAMP WHERE NOT EXISTS ({logged})",
    ]


def replace_statements(table: Table, first: str, last: str) -> list[str]:
    """After staging: replace the rows of [first, last] of the range column with the stage's."""
    assert table.range_column
    cols = ", ".join(table.column_names)
    return [
        f"DELETE FROM {table.name} WHERE {table.range_column} BETWEEN '{first}' AND '{last}'",
        f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {STAGE}",
    ]


def _rows(table: Table, data: pa.Table) -> pa.Table:
    missing = [c for c in table.column_names if c not in data.column_names]
    if missing:
        raise WarehouseError(f"{table.name}: rows lack columns {missing}")
    return data.select(table.column_names)


class _Loads:
    """Upsert and range replacement, the same for both dialects; each stages its own way."""

    def _run(
        self, what: str, table: Table, data: pa.Table, staging_prefix: str, statements: list[str]
    ) -> None:
        raise NotImplementedError

    def upsert(self, table: Table, data: pa.Table, query_name: str, batch_id: int) -> None:
        """Load one micro-batch of `table` rows; a replay of the same batch id changes nothing."""
        self._run(
            f"loading batch {batch_id} of {query_name}",
            table,
            data,
            f"{table.name}/{_checked(query_name)}/batch={int(batch_id)}",
            upsert_statements(table, query_name, batch_id),
        )

    def replace_range(self, table: Table, data: pa.Table, first: str, last: str) -> None:
        """Replace the rows of [first, last] of the table's range column, atomically."""
        self._run(
            f"replacing {first}..{last} of {table.name}",
            table,
            data,
            f"{table.name}/rollup={first}_{last}/{uuid.uuid4().hex}",
            replace_statements(table, first, last),
        )


# -- PostgreSQL ---------------------------------------------------------------------------


@dataclass
class PostgresWarehouse(_Loads):
    """PostgreSQL through psycopg; the password, if any, from an environment variable."""

    host: str
    port: int
    database: str
    user: str
    password: str | None = None
    sslmode: str = "prefer"
    connect_timeout: int = 10

    def describe(self) -> str:
        return f"PostgreSQL {self.host}:{self.port}/{self.database}"

    def _connect(self, what: str) -> Any:
        import psycopg

        try:
            return psycopg.connect(
                host=self.host,
                port=self.port,
                dbname=self.database,
                user=self.user,
                password=self.password,
                sslmode=self.sslmode,
                connect_timeout=self.connect_timeout,
            )
        except psycopg.OperationalError as exc:
            raise self._unavailable(what, exc) from None

    def _unavailable(self, what: str, exc: Exception) -> WarehouseError:
        first_line = str(exc).strip().splitlines()[0]
        return WarehouseError(f"warehouse {self.describe()} unavailable {what}: {first_line}")

    def ensure_tables(self, tables: Sequence[Table]) -> None:
        with self._connect("creating tables") as conn:
            for table in (*tables, LOAD_LOG_TABLE):
                conn.execute(create_table_sql(table, "postgres"))

    def _run(
        self, what: str, table: Table, data: pa.Table, staging_prefix: str, statements: list[str]
    ) -> None:
        import psycopg  # staging_prefix is not used: COPY FROM STDIN stages no files

        data = _rows(table, data)
        cols = ", ".join(f"{c.name} {c.postgres}" for c in table.columns)
        conn = self._connect(what)
        try:
            with conn.transaction():
                conn.execute(f"CREATE TEMP TABLE {STAGE} ({cols}) ON COMMIT DROP")
                # CSV written by Arrow in C, not row by row in Python; an unquoted empty field
                # is NULL to PostgreSQL, and Arrow quotes every string, so "" stays "".
                buffer = io.BytesIO()
                pa_csv.write_csv(data, buffer)
                with conn.cursor().copy(
                    f"COPY {STAGE} ({', '.join(table.column_names)}) FROM STDIN "
                    "WITH (FORMAT csv, HEADER true)"
                ) as copy:
                    copy.write(buffer.getvalue())
                for sql in statements:
                    conn.execute(sql)
        except psycopg.OperationalError as exc:
            raise self._unavailable(what, exc) from None
        finally:
            conn.close()


# -- Redshift -----------------------------------------------------------------------------


@dataclass
class RedshiftWarehouse(_Loads):
    """Redshift through the Data API (HTTPS, IAM or Secrets Manager credentials: no password
    here). Rows are staged as Parquet under a batch-id path in S3 and COPYed with an IAM role;
    the Data API runs a batch of statements as one transaction."""

    data_api: Any  # boto3 redshift-data client
    s3: Any  # boto3 s3 client
    database: str
    iam_role: str
    staging_uri: str
    workgroup_name: str | None = None
    cluster_identifier: str | None = None
    secret_arn: str | None = None
    db_user: str | None = None
    poll_seconds: float = 0.5
    timeout_seconds: float = 600
    executed: list[list[str]] = field(default_factory=list)

    def describe(self) -> str:
        return f"Redshift {self.workgroup_name or self.cluster_identifier}/{self.database}"

    def _target(self) -> dict[str, str]:
        target = {"Database": self.database}
        if self.workgroup_name:
            target["WorkgroupName"] = self.workgroup_name
        else:
            target["ClusterIdentifier"] = self.cluster_identifier
        if self.secret_arn:
            target["SecretArn"] = self.secret_arn
        elif self.db_user:
            target["DbUser"] = self.db_user
        return target

    def execute(self, sqls: list[str], what: str) -> None:
        """Run `sqls` as one transaction and wait for it; raise WarehouseError if it fails."""
        statement = self.data_api.batch_execute_statement(Sqls=sqls, **self._target())
        self.executed.append(sqls)
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            status = self.data_api.describe_statement(Id=statement["Id"])
            if status["Status"] == "FINISHED":
                return
            if status["Status"] in ("FAILED", "ABORTED"):
                raise WarehouseError(
                    f"{self.describe()}: {what} {status['Status']}: "
                    f"{status.get('Error', 'no error text')}"
                )
            if time.monotonic() > deadline:
                raise WarehouseError(
                    f"{self.describe()}: {what} still {status['Status']} "
                    f"after {self.timeout_seconds} s"
                )
            time.sleep(self.poll_seconds)

    def ensure_tables(self, tables: Sequence[Table]) -> None:
        self.execute(
            [create_table_sql(t, "redshift") for t in (*tables, LOAD_LOG_TABLE)], "creating tables"
        )

    def stage(self, table: Table, data: pa.Table, prefix: str) -> str:
        """Write the rows as Parquet under `staging_uri/prefix/`; return the COPY statement."""
        import pyarrow.parquet as pq

        bucket, _, base = self.staging_uri[len("s3://") :].partition("/")
        key = f"{base.rstrip('/')}/{prefix}/part-0.parquet".lstrip("/")
        buffer = io.BytesIO()
        pq.write_table(_rows(table, data), buffer)
        self.s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
        folder = f"s3://{bucket}/{key.rsplit('/', 1)[0]}/"
        return f"COPY {STAGE} FROM '{folder}' IAM_ROLE '{self.iam_role}' FORMAT AS PARQUET"

    def _run(
        self, what: str, table: Table, data: pa.Table, prefix: str, statements: list[str]
    ) -> None:
        cols = ", ".join(f"{c.name} {c.redshift}" for c in table.columns)
        copy = self.stage(table, data, prefix)
        self.execute(
            [f"CREATE TEMP TABLE {STAGE} ({cols})", copy, *statements, f"DROP TABLE {STAGE}"], what
        )


Warehouse = PostgresWarehouse | RedshiftWarehouse


@dataclass
class LoadStats:
    batches: int = 0
    rows: int = 0


def foreach_batch_loader(
    make_warehouse: Callable[[], Warehouse],
    table: Table,
    query_name: str,
    stats: LoadStats,
    on_failure: Callable[[], None] = lambda: None,
    checkpoint: str | None = None,
) -> Callable[[Any, int], None]:
    """A foreachBatch function loading each micro-batch of `table` rows idempotently.

    The rows of one micro-batch (the windows it updated) come to the driver as Arrow: they are
    bounded by keys x open windows, not by events. A failed load calls `on_failure` (the
    WarehouseLoadFailures metric) and fails the batch, which a restart loads again. The load
    log keys a batch by the query's checkpoint id too: a new checkpoint restarts batch ids at
    0, and its batches must not pass for ones already loaded."""
    ids: list[str] = []

    def load(batch: Any, batch_id: int) -> None:
        if checkpoint is not None and not ids:
            ids.append(f"{query_name}:{checkpoint_query_id(checkpoint)}")
        log_name = ids[0] if ids else query_name
        rows = batch.toArrow()
        try:
            make_warehouse().upsert(table, rows, log_name, batch_id)
        except Exception:
            on_failure()
            raise
        stats.batches += 1
        stats.rows += rows.num_rows

    return load


def warehouse_from_settings(settings: Any, environ: dict[str, str] | None = None) -> Warehouse:
    """The configured warehouse (`settings` is config.WarehouseSettings)."""
    from sensorpipe.secrets import SecretError, secret_value

    if settings.kind == "postgres":
        try:
            password = secret_value("warehouse.password_env", settings.password_env, None, environ)
        except SecretError as exc:
            raise WarehouseError(str(exc)) from None
        return PostgresWarehouse(
            settings.host,
            settings.port,
            settings.database,
            settings.user,
            password,
            settings.sslmode,
        )
    if settings.kind == "redshift":
        import boto3

        return RedshiftWarehouse(
            data_api=boto3.client("redshift-data", region_name=settings.region),
            s3=boto3.client("s3", region_name=settings.region),
            database=settings.database,
            iam_role=settings.iam_role,
            staging_uri=settings.staging_uri,
            workgroup_name=settings.workgroup_name,
            cluster_identifier=settings.cluster_identifier,
            secret_arn=settings.secret_arn,
            db_user=settings.db_user,
        )
    raise WarehouseError("warehouse.kind is none: no warehouse configured")
