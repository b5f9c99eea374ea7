"""External Hive metastore on a real PostgreSQL: the spark-hive-site classification of
conf/emr/metastore-jdbc.json becomes hive-site.xml as EMR writes it (the password's
EMR.secret@ ARN resolved from Secrets Manager, served by moto: EMR resolves it on AWS), then one
Spark process writes a partitioned table and another sees it, partitions included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import psycopg
import pytest

from tests.metastore_site import SECRET_ANNOTATION, hive_site

ROOT = Path(__file__).resolve().parent.parent
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
    conf = tmp_path_factory.mktemp("spark-conf")
    arn, client = secret_arn
    (conf / "hive-site.xml").write_text(
        hive_site(metastore_db, "hive", arn, client, tmp_path_factory.mktemp("warehouse"))
    )
    return conf


def test_the_classification_names_the_password_by_secret_arn_only(metastore_db, secret_arn):
    text = (ROOT / "conf/emr/metastore-jdbc.json").read_text()
    assert PASSWORD not in text and SECRET_ANNOTATION + "{{METASTORE_PASSWORD_SECRET_ARN}}" in text
    arn, client = secret_arn
    site = hive_site(metastore_db, "hive", arn, client, Path("/w"))
    assert f"<value>{PASSWORD}</value>" in site and "javax.jdo.option.ConnectionURL" in site


def spark_process(conf_dir: Path, action: str, warehouse: Path) -> dict:
    env = {**os.environ, "SPARK_CONF_DIR": str(conf_dir),
           "PYSPARK_PYTHON": sys.executable}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests/metastore_client.py"), action, str(warehouse)],
        env=env, capture_output=True, text=True, timeout=300, cwd=warehouse.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_table_written_by_one_spark_process_is_visible_with_partitions_to_another(
    spark_conf_dir, postgres, tmp_path
):
    warehouse = tmp_path / "warehouse"
    assert spark_process(spark_conf_dir, "write", warehouse) == {"written": 3}
    seen = spark_process(spark_conf_dir, "read", warehouse)
    assert seen == {
        "partitions": ["event_date=2026-11-01", "event_date=2026-11-02"],
        "rows": 3,
        "catalog": "hive",
    }
    # The definitions are in PostgreSQL, where only the password opens them.
    dsn = f"host=127.0.0.1 port={postgres.port} dbname=hive_metastore user=hive"
    with psycopg.connect(f"{dsn} password={PASSWORD}") as conn:
        tables = conn.execute('SELECT "TBL_NAME" FROM "TBLS"').fetchall()
        partitions = conn.execute('SELECT count(*) FROM "PARTITIONS"').fetchone()[0]
    assert tables == [("daily_aggregates",)] and partitions == 2
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"{dsn} password=wrong").close()
