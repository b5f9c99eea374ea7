"""The catalog on an external Hive metastore in a real PostgreSQL, as on EMR: the
`spark-hive-site` classification of conf/emr/metastore-jdbc.json becomes hive-site.xml as EMR
writes it (the password's EMR.secret@ ARN resolved from Secrets Manager, served by moto: EMR
resolves it on AWS), in $SPARK_CONF_DIR. Each job registers what it writes; another Spark
process reads every table by name and gets the lake's count, partitions included. The jobs run
as their own processes, as spark-submit runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import psycopg
import pytest
from pyspark.sql import functions as F
from sensorpipe.schemas import SCORED_EVENT_SCHEMA
from sensorpipe.sinks.lake import read_table
from sensorpipe_tools.local_settings import lake_environ
from sensorpipe_tools.samples import SampleSpec, generate

from tests.metastore_site import SECRET_ANNOTATION, hive_site, spark_defaults
from tests.test_health import AS_OF, new_hospital

ROOT = Path(__file__).resolve().parent.parent
JDBC_JAR = "/usr/share/java/postgresql.jar"
PASSWORD = "hive-metastore-s3cret"
SECRET_ID = "sensorpipe/metastore"


@pytest.fixture(scope="module")
def metastore_db(postgres):
    """A metastore database whose owner must give a password (scram), unlike the other tests'."""
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS hive_metastore")
        conn.execute("DROP ROLE IF EXISTS hive")
        conn.execute(f"CREATE ROLE hive LOGIN PASSWORD '{PASSWORD}'")
        conn.execute("CREATE DATABASE hive_metastore OWNER hive")
        hba = postgres.data_dir / "pg_hba.conf"
        hba.write_text("host hive_metastore hive 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
    return f"jdbc:postgresql://127.0.0.1:{postgres.port}/hive_metastore"


@pytest.fixture(scope="module")
def secret_arn(moto_server):
    client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_server)
    return client.create_secret(Name=SECRET_ID, SecretString=PASSWORD)["ARN"], client


@pytest.fixture(scope="module")
def spark_conf_dir(metastore_db, secret_arn, tmp_path_factory):
    """hive-site.xml as EMR writes it from the classification, and the driver's JDBC jar."""
    conf = tmp_path_factory.mktemp("spark-conf")
    arn, client = secret_arn
    warehouse = tmp_path_factory.mktemp("warehouse")
    (conf / "hive-site.xml").write_text(hive_site(metastore_db, "hive", arn, client, warehouse))
    (conf / "spark-defaults.conf").write_text(spark_defaults(JDBC_JAR))
    return conf


def test_the_classification_names_the_password_by_secret_arn_only(metastore_db, secret_arn):
    text = (ROOT / "conf/emr/metastore-jdbc.json").read_text()
    assert PASSWORD not in text
    assert f'"{SECRET_ANNOTATION}javax.jdo.option.ConnectionPassword": ' \
           '"{{METASTORE_PASSWORD_SECRET_ARN}}"' in text
    arn, client = secret_arn
    site = hive_site(metastore_db, "hive", arn, client, Path("/w"))
    assert f"<value>{PASSWORD}</value>" in site and "javax.jdo.option.ConnectionURL" in site


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
def lake(spark, spark_conf_dir, tmp_path_factory):
    """The streaming job then the day's compaction, each its own Spark process; then a killed
    micro-batch's file, on disk in the day's partition but not in the sink log. Returns the
    lake's root and the counts read from its paths (before that file)."""
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
    events = read_table(spark, str(tmp / "lake/events"), "parquet", SCORED_EVENT_SCHEMA)
    day = events.where(F.col("event_date") == "2026-11-01")
    expected = {
        "events": day.count(),
        "quarantine": spark.read.parquet(str(tmp / "lake/quarantine")).count(),
        "compacted": day.count(),
        "event_partitions": day.select("event_hour").distinct().count(),
    }
    assert expected["events"] > 0
    partition = next((tmp / "lake/events/event_date=2026-11-01").glob("event_hour=*"))
    committed_file = next(partition.glob("*.parquet"))
    shutil.copy(committed_file, partition / "part-99999-orphan-of-a-killed-batch.c000.parquet")
    return expected


@pytest.fixture(scope="module")
def hospital(spark, postgres, spark_conf_dir, tmp_path_factory):
    """The hospital's import then its snapshot, each its own Spark process; returns the counts
    read from the zones' paths."""
    h = new_hospital(postgres, tmp_path_factory.mktemp("catalog-hospital"), patients=15)
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
    return expected


@pytest.fixture(scope="module")
def seen_by_name(spark_conf_dir, lake, hospital) -> dict[str, int]:
    """One other Spark process reads both estates' tables by name (one reader: each process
    is a JVM and a metastore connection)."""
    return read_by_name(spark_conf_dir, {
        "events": "SELECT count(*) FROM sensorpipe.events WHERE event_date = '2026-11-01'",
        "quarantine": "SELECT count(*) FROM sensorpipe.quarantine",
        "compacted": "SELECT count(*) FROM sensorpipe.compacted_events "
                     "WHERE event_date = '2026-11-01'",
        "event_partitions": "SHOW PARTITIONS sensorpipe.events "
                            "PARTITION (event_date = '2026-11-01')",
        "patients": "SELECT count(*) FROM sensorpipe_phi.patients",
        "profile_protected": "SELECT count(*) FROM sensorpipe_phi.patient_profile "
                             f"WHERE as_of = '{AS_OF}'",
        "profile_general": "SELECT count(*) FROM sensorpipe.patient_profile "
                           f"WHERE as_of = '{AS_OF}'",
        "discrepancies": "SELECT count(*) FROM sensorpipe.billing_discrepancies",
    })  # fmt: skip


@pytest.mark.slow
def test_another_process_reads_the_lakes_tables_by_name(lake, seen_by_name):
    """Counts by name equal the lake's; the killed batch's orphan file is not read."""
    assert {name: seen_by_name[name] for name in lake} == lake


@pytest.mark.slow
def test_another_process_reads_the_hospitals_tables_by_name(hospital, seen_by_name):
    assert {name: seen_by_name[name] for name in hospital} == hospital


@pytest.mark.slow
def test_the_definitions_are_in_postgresql_where_only_the_password_opens_them(
    postgres, seen_by_name
):
    dsn = f"host=127.0.0.1 port={postgres.port} dbname=hive_metastore user=hive"
    with psycopg.connect(f"{dsn} password={PASSWORD}") as conn:
        tables = {name for (name,) in conn.execute('SELECT "TBL_NAME" FROM "TBLS"').fetchall()}
        partitions = conn.execute('SELECT count(*) FROM "PARTITIONS"').fetchone()[0]
    assert {"events", "quarantine", "compacted_events", "patients", "patient_profile"} <= tables
    assert partitions >= seen_by_name["event_partitions"]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"{dsn} password=wrong").close()
