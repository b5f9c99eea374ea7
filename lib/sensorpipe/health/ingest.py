"""Incremental import of the hospital's tables over JDBC into the protected zone.

Per table and run: rows with `updated_at` in (last high-water mark - `source.overlap_minutes`,
the source's current max], and rows with no `updated_at`, are read in parallel (split on the
table's numeric key), checked, and those not in a committed load already (same key and
version; for quarantined rows, the same record) are written as a new load:

    <protected>/<table>/load_id=N/            rows that passed the checks
    <protected>/_quarantine/<table>/load_id=N/  rows that did not, with reason and detail
    <protected>/_state/ingest/<table>.json      {load_id: N, high_water_mark: ...}: the commit

The state document is written last, so it is the commit: a run killed before it leaves a
`load_id` newer than the committed one, which readers ignore and the next run deletes before
reading the same rows again. A run with no new source rows writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from sensorpipe.catalog import register_partition
from sensorpipe.config import HealthSettings
from sensorpipe.health.tables import SOURCE_TABLES, SourceTable
from sensorpipe.jsonstore import JsonStore
from sensorpipe.lineage import LineageRun, schema_fingerprint
from sensorpipe.secrets import secret_value

LOAD_COLUMN = "load_id"
_TS_FORMAT = "yyyy-MM-dd HH:mm:ss.SSSSSS"


class IngestError(RuntimeError):
    """A table cannot be imported or read back; the message names it."""


def jdbc_options(settings: HealthSettings) -> dict[str, str]:
    source = settings.source
    options = {
        "url": source.url,
        "user": source.user,
        "driver": source.driver,
        "fetchsize": str(source.fetch_size),
        "sessionInitStatement": "SET TIME ZONE 'UTC'" if "postgresql" in source.url else "",
    }
    password = secret_value("source.password_env", source.password_env, source.password_secret_id)
    if password is not None:
        options["password"] = password
    return {k: v for k, v in options.items() if v}


@dataclass(frozen=True)
class Increment:
    rows: int
    min_key: int | None
    max_key: int | None
    high_water_mark: str | None  # UTC, microseconds; None when there is nothing new


def lower_bound(after: str | None, overlap_minutes: int) -> str | None:
    """Where a read starts: `overlap_minutes` before the last high-water mark."""
    if after is None:
        return None
    mark = datetime.strptime(after, "%Y-%m-%d %H:%M:%S.%f")
    return f"{mark - timedelta(minutes=overlap_minutes):%Y-%m-%d %H:%M:%S.%f}"


def _changed_since(table: SourceTable, lower: str | None) -> str:
    """Rows versioned after `lower`, and rows with no version (they are quarantined)."""
    column = table.updated_column
    if lower is None:
        return ""
    return f"WHERE ({column} > '{lower}+00' OR {column} IS NULL)"


def find_increment(
    spark: SparkSession, options: dict[str, str], table: SourceTable, lower: str | None
) -> Increment:
    """How many rows changed since `lower`, their key range and the new high-water mark."""
    query = (
        f"SELECT count(*) AS n, min({table.key}) AS lo, max({table.key}) AS hi, "
        f"max({table.updated_column}) AS hwm FROM {table.name} {_changed_since(table, lower)}"
    )
    row = (
        spark.read.format("jdbc")
        .options(**options)
        .option("query", query)
        .load()
        .select("n", "lo", "hi", F.date_format("hwm", _TS_FORMAT).alias("hwm"))
        .first()
    )
    if not row["n"]:
        return Increment(0, None, None, None)
    return Increment(int(row["n"]), int(row["lo"]), int(row["hi"]), row["hwm"])


def read_increment(
    spark: SparkSession,
    options: dict[str, str],
    table: SourceTable,
    lower: str | None,
    increment: Increment,
    num_partitions: int,
) -> DataFrame:
    """The rows in (lower, increment.high_water_mark] and those with no version, read by up to
    `num_partitions` tasks."""
    column = table.updated_column
    versions = f"{column} <= '{increment.high_water_mark}+00'" if increment.high_water_mark else ""
    since = f"{column} > '{lower}+00'" if lower else ""
    changed = " AND ".join(c for c in (since, versions) if c) or "TRUE"
    where = f"WHERE ({changed}) OR {column} IS NULL"
    columns = ", ".join(name for name, _ in table.columns)
    return (
        spark.read.format("jdbc")
        .options(**options)
        .option("dbtable", f"(SELECT {columns} FROM {table.name} {where}) AS increment")
        .option("partitionColumn", table.key)
        .option("lowerBound", str(increment.min_key))
        .option("upperBound", str(increment.max_key + 1))
        .option("numPartitions", str(max(1, min(num_partitions, increment.rows))))
        .load()
    )


def with_rejection(df: DataFrame, table: SourceTable) -> DataFrame:
    """Adds `reject_reason` and `reject_detail`: the first failing check, or nulls."""
    reason: Any = F.lit(None).cast("string")
    detail: Any = F.lit(None).cast("string")
    for check in reversed(table.all_checks):
        failed = check.detail()
        reason = F.when(failed.isNotNull(), F.lit(check.reason)).otherwise(reason)
        detail = F.when(failed.isNotNull(), failed).otherwise(detail)
    return df.withColumn("reject_reason", reason).withColumn("reject_detail", detail)


def split_rows(df: DataFrame, table: SourceTable) -> tuple[DataFrame, DataFrame]:
    """(valid rows as the source has them, quarantine rows: key, reason, detail, record)."""
    checked = with_rejection(df, table)
    valid = checked.where("reject_reason IS NULL").drop("reject_reason", "reject_detail")
    quarantine = checked.where("reject_reason IS NOT NULL").select(
        F.lit(table.name).alias("source_table"),
        F.col(table.key).alias("source_key"),
        F.col("reject_reason").alias("reason"),
        F.col("reject_detail").alias("detail"),
        F.to_json(F.struct(*[F.col(c) for c, _ in table.columns])).alias("record"),
    )
    return valid, quarantine


def current_rows(df: DataFrame, table: SourceTable) -> DataFrame:
    """The latest version of each row (an update arrives as a new version in a later load)."""
    latest = Window.partitionBy(table.key).orderBy(
        F.col(table.updated_column).desc(), F.col(LOAD_COLUMN).desc()
    )
    return (
        df.withColumn("_version", F.row_number().over(latest))
        .where("_version = 1")
        .drop("_version")
    )


class ProtectedLayout:
    """Where the ingest keeps each table, its quarantine and its commits in the protected zone."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.state = JsonStore(f"{self.root}/_state/ingest")

    def table_path(self, table: SourceTable) -> str:
        return f"{self.root}/{table.output_name}"

    def quarantine_path(self, table: SourceTable) -> str:
        return f"{self.root}/_quarantine/{table.output_name}"

    def committed(self, table: SourceTable) -> dict[str, Any]:
        return self.state.read(f"{table.name}.json") or {
            "load_id": 0,
            "high_water_mark": None,
        }


def _delete_loads_after(spark: SparkSession, base: str, committed: int) -> list[str]:
    """Remove what a killed run left behind: loads newer than the committed one."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(base)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return []
    removed = []
    for status in fs.listStatus(path):
        name = status.getPath().getName()
        if name.startswith(f"{LOAD_COLUMN}=") and int(name.split("=", 1)[1]) > committed:
            fs.delete(status.getPath(), True)
            removed.append(str(status.getPath()))
    return removed


@dataclass
class TableImport:
    table: str
    load_id: int | None  # None: nothing new, nothing written
    after: str | None
    high_water_mark: str | None
    rows_read: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    # Read again by the overlap window, already in a committed load.
    rows_already_imported: int = 0
    output_path: str = ""
    quarantine_path: str = ""
    schema_fingerprint: str | None = None
    cleaned_up: tuple[str, ...] = ()


def _committed_loads(spark: SparkSession, base: str, committed: int) -> DataFrame | None:
    """What the committed loads under `base` hold (None before the first)."""
    if committed == 0:
        return None
    try:
        loads = spark.read.option("basePath", base).parquet(base)
    except AnalysisException as exc:
        if exc.getCondition() == "PATH_NOT_FOUND":
            return None  # a table whose loads never quarantined anything
        raise
    return loads.where(F.col(LOAD_COLUMN) <= committed)


def not_yet_imported(
    spark: SparkSession, layout: ProtectedLayout, table: SourceTable, committed: int,
    lower: str | None, valid: DataFrame, quarantine: DataFrame,
) -> tuple[DataFrame, DataFrame]:  # fmt: skip
    """The overlap re-reads rows the committed loads hold: keep only new versions (key and
    updated_at) and rows not quarantined before (key and the record as it was)."""
    loads = _committed_loads(spark, layout.table_path(table), committed)
    if loads is not None and lower is not None:
        version = [table.key, table.updated_column]
        known = loads.where(F.col(table.updated_column) > F.to_timestamp(F.lit(lower)))
        valid = valid.join(known.select(*version).distinct(), version, "left_anti")
    rejected = _committed_loads(spark, layout.quarantine_path(table), committed)
    if rejected is not None:
        same = ["source_key", "record"]
        quarantine = quarantine.join(rejected.select(*same).distinct(), same, "left_anti")
    return valid, quarantine


def import_table(
    spark: SparkSession,
    settings: HealthSettings,
    table: SourceTable,
    options: dict[str, str],
    run_id: str,
) -> TableImport:
    layout = ProtectedLayout(settings.protected.root)
    state = layout.committed(table)
    committed, after = int(state["load_id"]), state["high_water_mark"]
    cleaned = _delete_loads_after(spark, layout.table_path(table), committed)
    cleaned += _delete_loads_after(spark, layout.quarantine_path(table), committed)
    # Read from before the mark: a transaction may commit rows older than it after the last
    # read. What was imported already is skipped below.
    lower = lower_bound(after, settings.source.overlap_minutes)
    increment = find_increment(spark, options, table, lower)
    result = TableImport(
        table.name,
        None,
        after,
        after,
        cleaned_up=tuple(cleaned),
        output_path=layout.table_path(table),
        quarantine_path=layout.quarantine_path(table),
    )
    if increment.rows == 0:
        return result
    load_id = committed + 1
    rows = read_increment(
        spark, options, table, lower, increment, settings.source.num_partitions
    ).persist()
    valid = quarantine = None
    try:
        valid, quarantine = split_rows(rows, table)
        valid, quarantine = not_yet_imported(spark, layout, table, committed, lower, valid,
                                             quarantine)  # fmt: skip
        valid, quarantine = valid.persist(), quarantine.persist()
        result.rows_read = rows.count()
        result.rows_valid = valid.count()
        result.rows_quarantined = quarantine.count()
        result.rows_already_imported = (
            result.rows_read - result.rows_valid - result.rows_quarantined
        )
        if result.rows_valid + result.rows_quarantined == 0:
            return result  # only what the overlap re-read: nothing new, nothing written
        result.schema_fingerprint = schema_fingerprint(valid)
        valid_schema = valid.schema
        valid.write.mode("overwrite").parquet(f"{layout.table_path(table)}/{LOAD_COLUMN}={load_id}")
        if result.rows_quarantined:
            quarantine.write.mode("overwrite").parquet(
                f"{layout.quarantine_path(table)}/{LOAD_COLUMN}={load_id}"
            )
    finally:
        for frame in (rows, valid, quarantine):
            if frame is not None:
                frame.unpersist()
    high_water_mark = max(m for m in (after, increment.high_water_mark) if m is not None)
    layout.state.write(
        f"{table.name}.json",
        {
            "load_id": load_id,
            "high_water_mark": high_water_mark,
            "previous_high_water_mark": after,
            "rows_valid": result.rows_valid,
            "rows_quarantined": result.rows_quarantined,
            "run_id": run_id,
        },
    )
    result.load_id, result.high_water_mark = load_id, high_water_mark
    # In the catalog only once committed: a reader by name never sees an unfinished load.
    catalog = settings.catalog
    register_partition(spark, catalog, catalog.protected_database, table.output_name,
                       layout.table_path(table), valid_schema, {LOAD_COLUMN: load_id})  # fmt: skip
    return result


def import_tables(
    spark: SparkSession,
    settings: HealthSettings,
    run: LineageRun,
    names: list[str] | None = None,
) -> list[TableImport]:
    """Import each table; one table's failure does not stop the others. Each committed load is
    on the run's record at once (a kill after a commit leaves it recorded); a failed table is
    recorded with its error, and the run then fails naming the failed tables."""
    tables = [t for t in SOURCE_TABLES if not names or t.name in names]
    unknown = set(names or []) - {t.name for t in tables}
    if unknown:
        raise IngestError(f"unknown source table(s): {', '.join(sorted(unknown))}")
    options = jdbc_options(settings)
    imports, failed = [], []
    for table in tables:
        try:
            result = import_table(spark, settings, table, options, run.run_id)
        except Exception as exc:  # noqa: BLE001 - recorded, then the run fails below
            run.failed(table.name, exc)
            run.checkpoint()
            failed.append(table.name)
            continue
        imports.append(result)
        record_lineage(run, [result])
        run.checkpoint()
    if failed:
        raise IngestError(
            f"{len(failed)} table(s) failed, the others were imported: {', '.join(failed)} "
            "(errors in the run's lineage record)"
        )
    return imports


def read_protected(spark: SparkSession, settings: HealthSettings, table: SourceTable) -> DataFrame:
    """A table's committed loads, latest version of each row."""
    layout = ProtectedLayout(settings.protected.root)
    committed = int(layout.committed(table)["load_id"])
    if committed == 0:
        raise IngestError(f"{table.name} has no committed load in the protected zone: run ingest")
    base = layout.table_path(table)
    loads = spark.read.option("basePath", base).parquet(base)
    return current_rows(loads.where(F.col(LOAD_COLUMN) <= committed), table)


def record_lineage(run: LineageRun, imports: list[TableImport]) -> None:
    """What an ingest run read (tables, with their high-water marks) and wrote (loads)."""
    for t in imports:
        # Rows new to the zone; those the overlap window read again are counted beside.
        run.read("jdbc", t.table, t.rows_read - t.rows_already_imported, after=t.after,
                 high_water_mark=t.high_water_mark, read_again=t.rows_already_imported)  # fmt: skip
        if t.load_id is None:
            continue
        run.wrote("path", f"{t.output_path}/{LOAD_COLUMN}={t.load_id}", t.rows_valid,
                  t.schema_fingerprint, zone="protected")  # fmt: skip
        if t.rows_quarantined:
            run.wrote("path", f"{t.quarantine_path}/{LOAD_COLUMN}={t.load_id}",
                      t.rows_quarantined, quarantine=True, zone="protected")  # fmt: skip


def render_imports(imports: list[TableImport]) -> str:
    lines = []
    for t in imports:
        cleaned = (
            f"  (removed an unfinished load: {', '.join(t.cleaned_up)})" if t.cleaned_up else ""
        )
        lines.append(
            f"{t.table:26} load {t.load_id or '-':>3}  "
            f"read {t.rows_read - t.rows_already_imported:6} new "
            f"({t.rows_already_imported} again)  "
            f"valid {t.rows_valid:6}  quarantined {t.rows_quarantined:4}  "
            f"high-water mark {t.high_water_mark}{cleaned}"
        )
    return "\n".join(lines)
