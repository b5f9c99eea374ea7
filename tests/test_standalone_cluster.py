"""The streaming job on a real distributed engine: a Spark standalone master and two workers,
each a process of its own with its own work folder (pyspark's `bin/spark-class`), the driver a
third. One worker is killed, with its executor and Python workers, in the middle of a batch;
the batch completes on the other and the lake is exact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyspark
import pytest
from sensorpipe_tools.local_services import free_port, wait_for_port

from tests.kinesis_helpers import assert_lake_exact, events, new_stream, put, settings_for
from tests.local_settings import ROOT, lake_environ

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"


def _spark_env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(tmp / "spark-logs"),
        "PYSPARK_PYTHON": sys.executable,
    }


class StandaloneCluster:
    """A master and `workers` workers (1 core each) on loopback, each in its own process
    group so that killing one takes its executor and Python workers with it."""

    def __init__(self, tmp: Path, workers: int = 2) -> None:
        self.tmp, self.port, self.ui_port = tmp, free_port(), free_port()
        env = _spark_env(tmp)
        self.master = subprocess.Popen(
            [str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(self.port), "--webui-port", str(self.ui_port)],
            env=env, stdout=open(tmp / "master.log", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.workers: list[subprocess.Popen] = []
        try:
            wait_for_port(self.port, 60, self.master)
            wait_for_port(self.ui_port, 60, self.master)
            for n in range(workers):
                work = tmp / f"worker-{n}"
                work.mkdir()
                self.workers.append(subprocess.Popen(
                    [str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", self.url,
                     "--host", "127.0.0.1", "--cores", "1", "--memory", "1536m",
                     "--work-dir", str(work), "--webui-port", str(free_port())],
                    env=env, stdout=open(tmp / f"worker-{n}.log", "wb"),
                    stderr=subprocess.STDOUT, start_new_session=True,
                ))  # fmt: skip
            self._wait_for_workers(workers)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as r:
            return json.load(r)

    def _wait_for_workers(self, count: int) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if self.state().get("aliveworkers", 0) >= count:
                    return
            except urllib.error.URLError:
                pass  # the UI's port opens before its pages are served (a 404 at first)
            time.sleep(0.5)
        raise TimeoutError(f"{count} workers did not register with {self.url}")

    def python_workers_of(self, worker: subprocess.Popen) -> list[int]:
        """Python worker processes (pyspark.daemon/worker) of a worker's executor."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                group = os.getpgid(int(entry.name))
            except (OSError, ProcessLookupError):
                continue
            if group == worker.pid and b"pyspark." in cmdline:
                found.append(int(entry.name))
        return found

    def kill(self, worker: subprocess.Popen) -> None:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)

    def stop(self) -> None:
        for proc in [*self.workers, self.master]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)


def _batch_files(checkpoint: Path, folder: str) -> set[int]:
    path = checkpoint / folder
    return {int(p.name) for p in path.iterdir() if p.name.isdigit()} if path.is_dir() else set()


@pytest.mark.slow
def test_a_worker_killed_mid_batch_leaves_the_lake_exact_on_a_standalone_cluster(
    spark, tmp_path, kinesis, kinesalite
):
    stream = new_stream(kinesis, 2)
    produced = events(0, 6000)
    put(kinesis, stream, produced)
    settings = settings_for(tmp_path, kinesalite.endpoint_url, stream)
    cluster = StandaloneCluster(tmp_path)
    try:
        summary_json = tmp_path / "summary.json"
        env = {
            **_spark_env(tmp_path),
            **lake_environ(tmp_path),
            "SENSORPIPE__SOURCE__KIND": "kinesis",
            "SENSORPIPE__SOURCE__ENDPOINT_URL": kinesalite.endpoint_url,
            "SENSORPIPE__SOURCE__STREAM_NAME": stream,
            "SENSORPIPE__SOURCE__STARTING_POSITION": "TRIM_HORIZON",
            "SENSORPIPE__SPARK__MASTER": cluster.url,
            # One machine: the driver and both executors see the same /tmp.
            "SENSORPIPE__SPARK__LOCAL_PATHS_SHARED": "true",
            "SENSORPIPE__SPARK__CONF": json.dumps(
                {
                    "spark.executor.memory": "1g",
                    "spark.executor.cores": "1",
                    "spark.cores.max": "2",
                    "spark.driver.host": "127.0.0.1",
                }
            ),  # fmt: skip
        }
        driver = subprocess.Popen(
            [sys.executable, "jobs/stream_sensor_anomalies.py", "--config", "conf/local.yaml",
             "--summary-json", str(summary_json)],
            cwd=ROOT, env=env, stdout=open(tmp_path / "driver.log", "wb"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        checkpoint = Path(settings.lake.checkpoint_root) / "events"
        victim = cluster.workers[0]
        killed_mid_batch = False
        deadline = time.monotonic() + 300
        try:
            while time.monotonic() < deadline and driver.poll() is None:
                planned, committed = (
                    _batch_files(checkpoint, "offsets"),
                    _batch_files(checkpoint, "commits"),
                )
                if planned - committed and cluster.python_workers_of(victim):
                    cluster.kill(victim)  # its executor is running a task of the batch
                    killed_mid_batch = True
                    break
                time.sleep(0.01)
            code = driver.wait(max(1, deadline - time.monotonic()))
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
        log = (tmp_path / "driver.log").read_text(errors="replace")
        assert killed_mid_batch, "the worker was not killed inside a batch"
        assert code == 0, log[-3000:]
        assert cluster.state()["aliveworkers"] == 1
    finally:
        cluster.stop()
    summary = json.loads(summary_json.read_text())
    assert summary["reconciled"], summary["problems"]
    assert summary["records_in"] == summary["valid"] == len(produced)
    assert "Lost executor" in log, "the driver saw no executor lost"
    assert_lake_exact(spark, settings, produced)
