"""The catalog: each job registers what it writes in a real PostgreSQL-backed Hive metastore
(hive-site.xml in $SPARK_CONF_DIR, as on EMR with an external metastore), and another Spark
process reads every table by name and gets the lake's count. The jobs run as their own
processes, as spark-submit runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from pyspark.sql import functions as F
from sensorpipe.schemas import SCORED_EVENT_SCHEMA
from sensorpipe.sinks.lake import read_table
from sensorpipe_tools.local_settings import lake_environ
from sensorpipe_tools.samples import SampleSpec, generate

from tests.metastore_site import hive_site
from tests.test_health import AS_OF, new_hospital

ROOT = Path(__file__).resolve().parent.parent
JDBC_JAR = "/usr/share/java/postgresql.jar"
pytestmark = pytest.mark.slow


class NoSecrets:
    """The test server trusts loopback: the password EMR would resolve is not needed."""

    def get_secret_value(self, SecretId: str) -> dict:  # noqa: N803 - boto3's name
        return {"SecretString": "unused-with-trust-auth"}


@pytest.fixture(scope="module")
def spark_conf_dir(postgres, tmp_path_factory):
    """hive-site.xml for a fresh metastore database, and the driver's JDBC jar."""
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS catalog_metastore")
        conn.execute("CREATE DATABASE catalog_metastore")
    conf = tmp_path_factory.mktemp("spark-conf")
    url = f"jdbc:postgresql://127.0.0.1:{postgres.port}/catalog_metastore"
    warehouse = tmp_path_factory.mktemp("warehouse")
    site = hive_site(url, "sensorpipe", "arn:aws:secretsmanager:::secret:none", NoSecrets(),
                     warehouse)  # fmt: skip
    (conf / "hive-site.xml").write_text(site)
    (conf / "spark-defaults.conf").write_text(f"spark.driver.extraClassPath {JDBC_JAR}\n")
    return conf


def run(conf_dir: Path, args: list[str], environ: dict[str, str]) -> str:
    env = {**os.environ, **environ, "SPARK_CONF_DIR": str(conf_dir),
           "SENSORPIPE__CATALOG__KIND": "hive", "PYSPARK_PYTHON": sys.executable}  # fmt: skip
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def read_by_name(conf_dir: Path, queries: dict[str, str]) -> dict[str, int]:
    out = run(conf_dir, [str(ROOT / "tests/catalog_reader.py"), json.dumps(queries)], {})
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def lake(spark_conf_dir, tmp_path_factory):
    """The streaming job then the day's compaction, each its own Spark process."""
    tmp = tmp_path_factory.mktemp("catalog-lake")
    samples = tmp / "samples"
    generate(SampleSpec(trains=1, hours=3, anomalies_per_train=0, malformed_per_kind=1), samples)
    environ = {
        **lake_environ(tmp),
        "SENSORPIPE__SOURCE__KIND": "replay",
        "SENSORPIPE__SOURCE__REPLAY_PATH": str(samples / "telemetry"),
        "SENSORPIPE__LAKE__COMPACTED_PATH": str(tmp / "lake/compacted"),
    }
    run(spark_conf_dir, ["jobs/stream_sensor_anomalies.py", "--config", "conf/local.yaml"],
        environ)  # fmt: skip
    run(spark_conf_dir, ["jobs/compact_lake.py", "--config", "conf/local.yaml",
                         "--date", "2026-11-01"], environ)  # fmt: skip
    return tmp


def test_another_process_reads_the_lakes_tables_by_name(spark, spark_conf_dir, lake):
    events = read_table(spark, str(lake / "lake/events"), "parquet", SCORED_EVENT_SCHEMA)
    day = events.where(F.col("event_date") == "2026-11-01")
    expected = day.count()
    assert expected > 0
    # A killed micro-batch's file: on disk in the day's partition, not in the sink log.
    partition = next((lake / "lake/events/event_date=2026-11-01").glob("event_hour=*"))
    committed_file = next(partition.glob("*.parquet"))
    shutil.copy(committed_file, partition / "part-99999-orphan-of-a-killed-batch.c000.parquet")
    quarantined = spark.read.parquet(str(lake / "lake/quarantine")).count()
    seen = read_by_name(spark_conf_dir, {
        "events": "SELECT count(*) FROM sensorpipe.events WHERE event_date = '2026-11-01'",
        "quarantine": "SELECT count(*) FROM sensorpipe.quarantine",
        "compacted": "SELECT count(*) FROM sensorpipe.compacted_events "
                     "WHERE event_date = '2026-11-01'",
        "event_partitions": "SHOW PARTITIONS sensorpipe.events "
                            "PARTITION (event_date = '2026-11-01')",
    })  # fmt: skip
    hours = day.select("event_hour").distinct().count()
    assert seen == {"events": expected, "quarantine": quarantined, "compacted": expected,
                    "event_partitions": hours}  # fmt: skip


def test_another_process_reads_the_hospitals_tables_by_name(spark, postgres, spark_conf_dir,
                                                            tmp_path):  # fmt: skip
    h = new_hospital(postgres, tmp_path, patients=15)
    run(spark_conf_dir, ["jobs/ingest_jdbc.py", "--config", "conf/health-local.yaml"], h.environ)
    run(spark_conf_dir, ["jobs/patient_profile_snapshot.py", "--config",
                         "conf/health-local.yaml", "--as-of", AS_OF], h.environ)  # fmt: skip
    protected, general = h.settings.protected.root, h.settings.general.root
    expected = {
        "patients": spark.read.parquet(f"{protected}/patients").count(),
        "profile_protected": spark.read.parquet(f"{protected}/patient_profile").count(),
        "profile_general": spark.read.parquet(f"{general}/patient_profile").count(),
        "discrepancies": spark.read.parquet(f"{general}/billing_discrepancies").count(),
    }
    assert expected["patients"] > 0 and expected["profile_general"] == 15
    seen = read_by_name(spark_conf_dir, {
        "patients": "SELECT count(*) FROM sensorpipe_phi.patients",
        "profile_protected": "SELECT count(*) FROM sensorpipe_phi.patient_profile "
                             f"WHERE as_of = '{AS_OF}'",
        "profile_general": "SELECT count(*) FROM sensorpipe.patient_profile "
                           f"WHERE as_of = '{AS_OF}'",
        "discrepancies": "SELECT count(*) FROM sensorpipe.billing_discrepancies",
    })  # fmt: skip
    assert seen == expected
