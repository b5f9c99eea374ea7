"""The SparkSession, for local runs and for EMR. Built by a job's main() or a test fixture,
never at import time."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from sensorpipe.config import HealthSettings, Settings

ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
FILE_SYSTEM_CHECKPOINTS = (
    "org.apache.spark.sql.execution.streaming.FileSystemBasedCheckpointFileManager"
)


def local_spark_conf(shuffle_partitions: int) -> dict[str, str]:
    """Properties a laptop run needs and an EMR cluster already sets for itself."""
    return {
        # Workers must run the driver's interpreter, or they miss the venv's packages.
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.default.parallelism": str(shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Checkpoint files through the FileSystem API, as Spark does itself for a file system
        # without a FileContext (CheckpointFileManager.create, apache/spark). Through
        # FileContext, Hadoop's local file system forks `readlink` for every status it reads
        # (no native library here): about 160 forks per scoring batch, a state store commit
        # of 340-530 ms against 140-170 ms this way (20 keys, measured). The cost: a batch
        # file's "no overwrite" is checked before the rename, not by it, which matters only
        # to two drivers running one checkpoint at once.
        "spark.sql.streaming.checkpointFileManagerClass": FILE_SYSTEM_CHECKPOINTS,
    }


def job_spark_conf() -> dict[str, str]:
    """Properties the jobs' semantics depend on, wherever they run."""
    return {
        # Partitions (event_date, event_hour) are UTC, not the driver's local time.
        "spark.sql.session.timeZone": "UTC",
        # transformWithStateInPandas (the detectors' per-key state) needs RocksDB.
        "spark.sql.streaming.stateStore.providerClass": ROCKSDB_PROVIDER,
        # A commit uploads the batch's changes, not a RocksDB snapshot (a background
        # maintenance task snapshots now and then): SPARK-43421, the Structured Streaming
        # guide's "RocksDB State Store Changelog Checkpointing", which may be turned on for an
        # existing checkpoint. Measured on the scorer alone at 20 keys: the state commit 2-15 ms
        # a batch against 200-300 ms, checkpoint bytes per batch 11 KB against 25 KB.
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # The run summary reads every micro-batch's progress, not only the last 100 (a
        # continuous run keeps fewer: keep_progress_reports).
        PROGRESS_REPORTS: str(FINITE_RUN_PROGRESS_REPORTS),
    }


PROGRESS_REPORTS = "spark.sql.streaming.numRecentProgressUpdates"
# A query keeps its last N progress reports in the driver's heap, each with its maps of
# durations, observed metrics and state-operator metrics. A finite run's summary reads every
# batch's, and it has as many batches as its input holds; a continuous run kept 10,000 per
# query, which its four queries fill over hours (the soak, issue 30: the driver's live heap
# grew from 131 to 154 MB while its queries added 503 reports, in 5 minutes). Its summary
# reconciles the batches it still has (streaming/summary.py), so a continuous run keeps
# Spark's default.
FINITE_RUN_PROGRESS_REPORTS = 10_000
CONTINUOUS_RUN_PROGRESS_REPORTS = 100


def keep_progress_reports(spark: SparkSession, continuous: bool) -> None:
    """How many progress reports the queries started next keep (see PROGRESS_REPORTS)."""
    keep = CONTINUOUS_RUN_PROGRESS_REPORTS if continuous else FINITE_RUN_PROGRESS_REPORTS
    spark.conf.set(PROGRESS_REPORTS, str(keep))


def session_conf(settings: Settings | HealthSettings) -> dict[str, str]:
    """Every Spark property the jobs set, for these settings. `spark.shuffle_partitions`
    applies everywhere: on EMR too, Spark's default of 200 would write 200 small files per
    aggregate batch."""
    conf = job_spark_conf()
    conf["spark.sql.shuffle.partitions"] = str(settings.spark.shuffle_partitions)
    if settings.environment == "local":
        conf.update(local_spark_conf(settings.spark.shuffle_partitions))
    conf.update(settings.spark.conf)
    return conf


def build_session(settings: Settings | HealthSettings) -> SparkSession:
    """Build (or return the running) SparkSession for these settings."""
    conf = session_conf(settings)
    builder = SparkSession.builder.appName(settings.spark.app_name)
    if settings.environment == "local":
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.master(settings.spark.master or "local[2]")
    elif settings.spark.master:
        builder = builder.master(settings.spark.master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    if settings.catalog.kind == "hive":
        # Glue or the external metastore on EMR (spark-hive-site), hive-site.xml locally.
        builder = builder.enableHiveSupport()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
