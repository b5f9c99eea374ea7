"""The catalog: every table a job writes, registered by name where Ranger, Lake Formation and
other Spark processes look for it (the Glue Data Catalog or an external Hive metastore on EMR, a
PostgreSQL-backed metastore locally).

    register_table(spark, settings.catalog, db, "events", path, schema, ["event_date", ...])
    add_partitions(spark, settings.catalog, db, "events", [{"event_date": "2026-11-01", ...}])

Tables are external Parquet tables over the lake's own paths: the catalog never owns or moves
data, and dropping a table leaves the files. A table written by the streaming file sink keeps its
sink log (`_spark_metadata`); Spark reads such a table by name through that log, so a file a
failed micro-batch left behind is not read by name either. Partitions are added after the data
they hold is committed, so a reader that lists partitions (Athena, Redshift Spectrum) sees only
committed data. With `catalog.kind: none` every function here does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.types import StringType, StructField, StructType

from sensorpipe.config import CatalogSettings
from sensorpipe.listener import ProgressListener


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _literal(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def qualified(database: str, table: str) -> str:
    return f"{_quote(database)}.{_quote(table)}"


def table_ddl(
    database: str,
    table: str,
    location: str,
    schema: StructType,
    partition_columns: Sequence[str],
    table_format: str = "parquet",
) -> str:
    """CREATE TABLE IF NOT EXISTS for an external table over `location`; partition columns
    missing from `schema` (they live in the directory names) are added as strings."""
    if table_format == "delta":  # the schema and partitions are Delta's log
        return (
            f"CREATE TABLE IF NOT EXISTS {qualified(database, table)} USING delta "
            f"LOCATION {_literal(location)}"
        )
    fields = list(schema.fields)
    names = {f.name for f in fields}
    fields += [StructField(c, StringType()) for c in partition_columns if c not in names]
    # Partition columns last, as Spark stores them.
    ordered = [f for f in fields if f.name not in partition_columns] + [
        next(f for f in fields if f.name == c) for c in partition_columns
    ]
    columns = ", ".join(f"{_quote(f.name)} {f.dataType.simpleString()}" for f in ordered)
    partitioned = (
        f" PARTITIONED BY ({', '.join(_quote(c) for c in partition_columns)})"
        if partition_columns
        else ""
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified(database, table)} ({columns}) USING "
        f"{table_format}{partitioned} LOCATION {_literal(location)}"
    )


def register_table(
    spark: SparkSession,
    catalog: CatalogSettings,
    database: str,
    table: str,
    location: str,
    schema: StructType,
    partition_columns: Sequence[str] = (),
    table_format: str = "parquet",
) -> str | None:
    """Create the database and the table if missing; the table's qualified name, or None when
    no catalog is configured. An existing table at another location is an error: two paths
    under one name would make readers disagree."""
    if catalog.kind == "none":
        return None
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {_quote(database)}")
    name = qualified(database, table)
    if spark.catalog.tableExists(f"{database}.{table}"):
        existing = spark.sql(f"DESCRIBE TABLE EXTENDED {name}").collect()
        found = next((r.data_type for r in existing if r.col_name == "Location"), None)
        if found is not None and found.rstrip("/") != _normalise(spark, location):
            raise ValueError(f"catalog table {database}.{table} is at {found}, not {location}")
        return name
    spark.sql(table_ddl(database, table, location, schema, partition_columns, table_format))
    return name


def _normalise(spark: SparkSession, location: str) -> str:
    """A location as the metastore stores it (file:/... for local paths)."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return str(fs.makeQualified(path)).rstrip("/")


def add_partitions(
    spark: SparkSession,
    catalog: CatalogSettings,
    database: str,
    table: str,
    partitions: Iterable[Mapping[str, Any]],
) -> int:
    """Register partitions (their data already committed); how many were asked for. Adding an
    existing partition changes nothing, so a replayed batch is harmless."""
    specs = sorted({tuple(sorted((k, str(v)) for k, v in p.items())) for p in partitions})
    if catalog.kind == "none" or not specs:
        return 0
    clauses = " ".join(
        "PARTITION (" + ", ".join(f"{_quote(k)} = {_literal(v)}" for k, v in spec) + ")"
        for spec in specs
    )
    spark.sql(f"ALTER TABLE {qualified(database, table)} ADD IF NOT EXISTS {clauses}")
    return len(specs)


def register_partition(
    spark: SparkSession,
    catalog: CatalogSettings,
    database: str,
    table: str,
    location: str,
    schema: StructType,
    partition: Mapping[str, Any],
) -> None:
    """A table written one partition at a time (a load, a snapshot date): the table if
    missing, then the partition just committed."""
    if catalog.kind == "none":
        return
    register_table(spark, catalog, database, table, location, schema, list(partition))
    add_partitions(spark, catalog, database, table, [partition])


def partition_spec(directory: str) -> dict[str, str]:
    """{"event_date": "2026-11-01", "event_hour": "5"} from "event_date=2026-11-01/event_hour=5"."""
    return dict(part.split("=", 1) for part in directory.split("/") if "=" in part)


def partitions_of_files(files: Iterable[str]) -> list[dict[str, str]]:
    """The Hive partitions (key=value directories) the given data files are in."""
    from sensorpipe.sinks.lake import partitions_of

    return [partition_spec(d) for d in sorted(partitions_of(set(files))) if d]


class CommittedPartitionsListener(ProgressListener):
    """Adds the partitions each committed micro-batch of a file-sink query wrote, while a
    continuous run runs: after a batch commits, its files are in the sink log, and progress
    events follow commits. Events arrive asynchronously (the last ones of a run may come after
    it ended), so a run also adds its partitions when it ends (`register_run_partitions`)."""

    def __init__(
        self,
        spark: SparkSession,
        catalog: CatalogSettings,
        database: str,
        tables: Mapping[str, tuple[str, str]],  # query name -> (table, path)
    ) -> None:
        self.spark, self.catalog, self.database, self.tables = spark, catalog, database, tables

    def onQueryProgress(self, event: Any) -> None:
        from sensorpipe.sinks.sink_log import batch_files, sink_log_of

        progress = event.progress
        target = self.tables.get(progress.name)
        if target is None or not progress.numInputRows:
            return
        table, path = target
        files = batch_files(sink_log_of(path), progress.batchId, 0)
        add_partitions(self.spark, self.catalog, self.database, table, partitions_of_files(files))
