"""External Hive metastore on a real PostgreSQL: the bootstrap action writes hive-site.xml (the
password from Secrets Manager, served by moto), then one Spark process writes a partitioned
table and another sees it, partitions included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import psycopg
import pytest

from tests.sandbox import file_tree

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
def secret(moto_server):
    client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_server)
    client.create_secret(Name=SECRET_ID, SecretString=PASSWORD)
    return moto_server


def run_bootstrap(root: Path, jdbc_url: str, moto: str, *extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": moto,
        # No aws CLI here: the script falls back to this Python's boto3.
        "SENSORPIPE_BOOTSTRAP_PYTHON": sys.executable,
        "PATH": "/usr/bin:/bin",
    }
    args = [
        "bash", str(ROOT / "bootstrap/metastore.sh"), "--jdbc-url", jdbc_url, "--user", "hive",
        "--password-secret-id", SECRET_ID, "--region", "us-east-1",
        "--conf-dir", "/etc/spark/conf", "--root", str(root), *extra,
    ]  # fmt: skip
    return subprocess.run(args, env=env, capture_output=True, text=True, check=True)


@pytest.fixture(scope="module")
def node(metastore_db, secret, tmp_path_factory):
    root = tmp_path_factory.mktemp("node")
    conf = root / "etc/spark/conf"
    conf.mkdir(parents=True)
    # What EMR wrote from the spark-hive-site classification: kept by the merge.
    (conf / "hive-site.xml").write_text(
        "<configuration><property><name>hive.metastore.connect.retries</name>"
        "<value>15</value></property></configuration>\n"
    )
    dry = run_bootstrap(root, metastore_db, secret, "--dry-run")
    first = run_bootstrap(root, metastore_db, secret)
    return root, dry, first


def test_hive_site_gets_the_jdbc_settings_and_the_password_which_no_log_shows(node):
    root, dry, first = node
    site = root / "etc/spark/conf/hive-site.xml"
    text = site.read_text()
    for needed in ("javax.jdo.option.ConnectionURL", "org.postgresql.Driver",
                   "<value>hive</value>", "datanucleus.schema.autoCreateTables",
                   "hive.metastore.connect.retries", PASSWORD):  # fmt: skip
        assert needed in text
    assert site.stat().st_mode & 0o777 == 0o640  # owner and group (hadoop) only
    for output in (dry.stdout, dry.stderr, first.stdout, first.stderr):
        assert PASSWORD not in output
    assert "dry-run: would update" in dry.stderr and "updated" in first.stderr


def test_second_run_changes_nothing(node, metastore_db, secret):
    root, _, _ = node
    before = file_tree(root)
    again = run_bootstrap(root, metastore_db, secret)
    assert file_tree(root) == before
    assert "unchanged" in again.stderr


def test_dry_run_on_a_fresh_node_writes_nothing(metastore_db, secret, tmp_path):
    run_bootstrap(tmp_path, metastore_db, secret, "--dry-run")
    assert file_tree(tmp_path) == {}


def spark_process(root: Path, action: str, warehouse: Path) -> dict:
    env = {**os.environ, "SPARK_CONF_DIR": str(root / "etc/spark/conf"),
           "PYSPARK_PYTHON": sys.executable}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests/metastore_client.py"), action, str(warehouse)],
        env=env, capture_output=True, text=True, timeout=300, cwd=warehouse.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_table_written_by_one_spark_process_is_visible_with_partitions_to_another(
    node, postgres, tmp_path
):
    root, _, _ = node
    warehouse = tmp_path / "warehouse"
    assert spark_process(root, "write", warehouse) == {"written": 3}
    seen = spark_process(root, "read", warehouse)
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
