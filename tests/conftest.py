"""One SparkSession for the whole test session, built the way the jobs build theirs."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sensorpipe.session import job_spark_conf, local_spark_conf
from sensorpipe_tools.local_services import Kinesalite, Postgres, local_aws_environment

ROOT = Path(__file__).resolve().parent.parent

# Local stand-ins (kinesalite, moto) check no credentials but boto3 wants some; set before the
# SparkSession starts so its Python workers inherit them.
for _key, _value in local_aws_environment().items():
    os.environ.setdefault(_key, _value)
SAMPLES = ROOT / "samples"
JDBC_JAR = "/usr/share/java/postgresql.jar"


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master("local[2]").appName("sensorpipe-tests")
    # Debian's PostgreSQL JDBC driver, for the JDBC ingest tests (CI installs the package).
    conf = {
        **job_spark_conf(),
        **local_spark_conf(shuffle_partitions=2),
        "spark.sql.shuffle.partitions": "2",
        "spark.jars": JDBC_JAR,
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@contextlib.contextmanager
def spark_conf(session, **values: str) -> Iterator[None]:
    """Set SQL configuration for a block and restore what was there before."""
    keys = {k.replace("__", "."): v for k, v in values.items()}
    before = {k: session.conf.get(k, None) for k in keys}
    try:
        for k, v in keys.items():
            session.conf.set(k, v)
        yield
    finally:
        for k, v in before.items():
            if v is None:
                session.conf.unset(k)
            else:
                session.conf.set(k, v)


@pytest.fixture(scope="session")
def kinesalite(tmp_path_factory):
    """One kinesalite for the test session, on a free loopback port; tests use their own streams.
    Its output goes to a log, which a test that finds it gone quotes."""
    log = tmp_path_factory.mktemp("kinesalite") / "kinesalite.log"
    service = Kinesalite.start(log_path=log)
    service.log = log  # type: ignore[attr-defined]
    yield service
    service.stop()


@pytest.fixture
def kinesis(kinesalite):
    import boto3

    # One full run lost kinesalite half way (every Kinesis test after it: connection refused),
    # with nothing to say why: now the log says.
    if kinesalite.proc.poll() is not None:
        tail = kinesalite.log.read_text(errors="replace")[-3000:]
        pytest.fail(f"kinesalite exited with {kinesalite.proc.returncode}; its log ends:\n{tail}")

    return boto3.client("kinesis", endpoint_url=kinesalite.endpoint_url, region_name="us-east-1")


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL 15 server for the session (as the unprivileged postgres user)."""
    import shutil
    import tempfile

    data_dir = Path(tempfile.mkdtemp(prefix="sensorpipe-test-pg-"))
    data_dir.chmod(0o755)  # the postgres user must reach its data directory
    server = Postgres.start(data_dir / "data")
    yield server
    try:
        server.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def warehouse_db(postgres):
    """A fresh database on the session's server, for one test."""

    import psycopg

    name = f"wh_{next(_databases)}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return name


_databases = __import__("itertools").count()


@pytest.fixture(scope="session")
def moto_server():
    """moto's server mode, for AWS APIs with no local server of their own (a mock)."""
    import subprocess

    from sensorpipe_tools.local_services import free_port, wait_for_port

    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 30, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def emr_users():
    """`hadoop` with passwordless sudo and a user without (tests/emr_node.py)."""
    from tests.emr_node import create_emr_users, remove_emr_users

    create_emr_users()
    yield
    remove_emr_users()


@pytest.fixture(scope="session")
def estate_cdk_out(tmp_path_factory):
    """The estate (infra/, infra/estate.yaml) synthesised once per session: cdk.out's folder."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "infra"))
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    from sensorpipe_estate.build import build_app
    from sensorpipe_estate.settings import load_estate

    out = tmp_path_factory.mktemp("cdk.out")
    build_app(load_estate(Path(__file__).resolve().parent.parent / "infra/estate.yaml"),
              outdir=str(out)).synth()  # fmt: skip
    return out
