"""Artifacts a cluster gets: the wheel, and the --py-files zip run through spark-submit."""

import json
import os
import platform
import shlex
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_pip_wheel_builds_the_runtime_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("sensorpipe-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = next(n for n in names if n.endswith("METADATA"))
        metadata = zf.read(meta).decode()
    assert "sensorpipe/decode.py" in names and "sensorpipe/schemas.py" in names
    assert not [n for n in names if n.endswith("entry_points.txt")]  # the CLI is a tool
    assert "Requires-Python: >=3.11" in metadata
    # pyspark only as an extra: the cluster's Spark must not be shadowed.
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    pyspark_lines = [line for line in requires if "pyspark" in line]
    assert pyspark_lines and all("extra ==" in line for line in pyspark_lines)


# The developer and operator tools (now tools/sensorpipe_tools), where they stood in the runtime
# package, and tools that must never reach a node.
TOOL_MODULES = ("cli.py", "deploy.py", "local_services.py", "samples.py", "producer.py",
                "plot.py", "health/synthetic.py", "synthetic_hospital.py")  # fmt: skip
NEVER_ON_THE_CLUSTER = ("sensorpipe_tools", "aws_cdk", "checkov", "cfn_lint", "pyspark/", "awscli")


@pytest.fixture(scope="module")
def cluster_dist(tmp_path_factory) -> Path:
    """`make dist` once for this module: what `sensorpipe deploy` uploads (tmp/dist)."""
    tmp_path = tmp_path_factory.mktemp("make-dist")
    subprocess.run(
        ["make", "--no-print-directory", "-s", "dist", f"DIST={tmp_path}/dist",
         f"DIST_VENV={tmp_path}/venv"],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return tmp_path


@pytest.mark.slow
def test_cluster_artifacts_hold_the_runtime_package_and_no_tool(cluster_dist):
    """`make dist`: the wheel, the --py-files zip and the dependency archive, listed."""
    tmp_path = cluster_dist
    (wheel,) = (tmp_path / "dist").glob("sensorpipe-*.whl")
    # What `sensorpipe deploy` checks the instances' architecture against.
    build = json.loads((tmp_path / "dist/BUILD-INFO.json").read_text())
    assert build == {"machine": platform.machine(), "python": "3.11"}
    listings = {
        "wheel": zipfile.ZipFile(wheel).namelist(),
        "zip": zipfile.ZipFile(tmp_path / "dist/sensorpipe.zip").namelist(),
        "archive": tarfile.open(tmp_path / "dist/sensorpipe-deps.tar.gz").getnames(),
    }
    for kind, names in listings.items():
        ours = [n.split("sensorpipe/", 1)[1] for n in names if "sensorpipe/" in n
                and "sensorpipe_tools" not in n and n.endswith(".py")]  # fmt: skip
        assert "streaming/__init__.py" in ours or "streaming.py" in ours, kind
        assert "decode.py" in ours, kind
        assert not set(ours) & set(TOOL_MODULES), (kind, set(ours) & set(TOOL_MODULES))
        assert "config/deploy.py" in ours  # the deploy *settings* are runtime configuration
        assert not [n for n in names for bad in NEVER_ON_THE_CLUSTER if bad in n], kind


def spark_submit_commands(text: str, prefix: str) -> dict[str, list[str]]:
    """Per job script, the arguments after `spark-submit` of each command in `text` (backslash
    continuations joined), `prefix` standing for the Makefile's $(SPARK_SUBMIT)."""
    text = text.replace("\\\n", " ").replace("$(SPARK_SUBMIT)", prefix)
    out = {}
    for command in text.split("spark-submit ")[1:]:
        words = shlex.split(command.splitlines()[0].split("2>>")[0].split(",")[0])
        job = next(w for w in words if w.startswith("jobs/"))
        out[job] = words
    return out


def test_make_run_runs_the_readmes_spark_submit_lines():
    """What the README tells a user to run by hand is what `make run` runs (which the next
    test runs): the same spark-submit arguments, `make run`'s zip in build/ for dist/."""
    makefile = (ROOT / "Makefile").read_text()
    prefix = makefile.split("SPARK_SUBMIT := ", 1)[1].splitlines()[0].split("spark-submit ", 1)[1]
    readme = (ROOT / "README.md").read_text().split("## Running a job by hand", 1)[1]
    by_hand = spark_submit_commands(readme.split("```", 2)[1], "")
    run_recipe = makefile.split("\nrun: ", 1)[1].split("\n\n", 1)[0]
    made = spark_submit_commands(run_recipe, "spark-submit " + prefix)
    assert set(by_hand) == set(made) == {"jobs/stream_sensor_anomalies.py",
                                         "jobs/batch_daily_rollup.py"}  # fmt: skip
    for job, words in by_hand.items():
        words = ["build/sensorpipe.zip" if w == "dist/sensorpipe.zip" else w for w in words]
        assert made[job][: len(words)] == words, job
        assert made[job][len(words) :] in ([], ["--summary-text", "build/run-summary.txt"]), job


@pytest.mark.slow
def test_make_run_is_quiet_and_ends_with_the_summary():
    """`make run` as a new user sees it: no Java stack trace, no Python worker banner, one line
    per micro-batch, and the run summary last, with the manifest's counts. (Spark's logs are in
    build/logs/.) Ports are free ones, so a developer's own make run is not disturbed. Its
    spark-submit with the --py-files zip (the README's line) ran the zip's code, read the
    samples from Kinesis and loaded the warehouse."""
    from sensorpipe_tools.local_services import free_port

    manifest = json.loads((ROOT / "samples/manifest.json").read_text())["counts"]
    result = subprocess.run(
        ["make", "--no-print-directory", "run", f"KINESIS_PORT={free_port()}",
         f"PG_PORT={free_port()}", f"PG_DATA=/tmp/sensorpipe-test-make-run-{os.getpid()}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "Exception" not in out and "\tat org." not in out and "Traceback" not in out
    assert "Python worker" not in out and "log4j" not in out
    lines = out.strip().splitlines()
    assert any(line.startswith("batch 0: ") for line in lines)
    summary = lines[lines.index("sensorpipe stream run summary") :]
    assert summary[-2] == "  reconciled (in = valid + quarantined): True"
    assert f"  records in           {manifest['records']}" in summary
    assert f"  valid                {manifest['valid']}" in summary
    assert (ROOT / "build/logs/stream.log").stat().st_size > 0
    summary = json.loads((ROOT / "build/run-summary.json").read_text())
    assert {k: v for k, v in summary["quarantined"].items() if v} == manifest["quarantined"]
    assert len(summary["events"]["partitions_written"]) == manifest["event_partitions"]
    assert summary["aggregate_rows_loaded"] == manifest["valid"]  # 1-minute windows
    assert str(ROOT / "build/sensorpipe.zip") in summary["code"], "ran the checkout, not the zip"


def _unpacked_archive(cluster_dist: Path, into: Path) -> Path:
    """The dependency archive unpacked into an empty folder, as YARN localises
    `spark.archives=...#environment`: its interpreter is the cluster's Python (bin/python3 links
    to /usr/bin/python3.11) and its site-packages are the archive's alone."""
    into.mkdir()
    with tarfile.open(cluster_dist / "dist/sensorpipe-deps.tar.gz") as tar:
        tar.extractall(into, filter="fully_trusted")
    return into / "bin/python"


def _errors(stderr: str) -> str:
    """The Python and Java error lines of a failed spark-submit (its stack traces are long)."""
    lines = [line for line in stderr.splitlines() if "Error" in line or "Exception:" in line]
    return "\n".join(dict.fromkeys(lines[:40])) or stderr[-3000:]


def _archive_only_environment(python: Path) -> dict[str, str]:
    """What a YARN container has: the archive's interpreter for the driver and the workers, and
    none of this machine's Python paths (no dev venv, no user site, no PYTHONPATH)."""
    import pyspark

    keep = ("PATH", "HOME", "JAVA_HOME", "LANG", "TMPDIR", "USER")
    env = {k: v for k, v in os.environ.items() if k in keep}
    # The cluster's Spark (here the pyspark wheel's jars and scripts, as /usr/lib/spark is on
    # EMR): spark-submit puts its pyspark.zip and py4j on the Python path, nothing more.
    spark_home = str(Path(pyspark.__file__).parent)
    return {**env, "SPARK_HOME": spark_home, "PYSPARK_PYTHON": str(python),
            "PYSPARK_DRIVER_PYTHON": str(python), "PYTHONNOUSERSITE": "1",
            "SPARK_CONF_DIR": "/nonexistent"}  # fmt: skip


@pytest.mark.slow
def test_the_dependency_archive_alone_runs_the_streaming_job_and_a_batch_job(
    cluster_dist, tmp_path
):
    """EMR runs the jobs with `spark.archives=sensorpipe-deps.tar.gz#environment` and
    PYSPARK_PYTHON=./environment/bin/python (emr-steps.json): the driver and every Python worker
    import from that archive and the --py-files zip, nothing else. A short finite run of the
    streaming job (the scorer's transformWithStateInPandas workers, numba, the file sinks and
    the alerts) and the compaction batch job, with only the archive's interpreter."""
    python = _unpacked_archive(cluster_dist, tmp_path / "environment")
    env = _archive_only_environment(python)
    # The cluster's interpreter with the cluster's standard library (pyvenv.cfg's home).
    assert "home = /usr/bin\n" in (python.parent.parent / "pyvenv.cfg").read_text()
    # The interpreter sees the archive's site-packages only: no pyspark (the cluster's Spark
    # brings it on PYTHONPATH), nothing of the dev venv.
    probe = subprocess.run(
        [str(python), "-c", "import sys, importlib.util as u; print(repr(sys.path)); "
         "print(u.find_spec('pyspark') is None, u.find_spec('pytest') is None)"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert str(VENV_BIN.parent) not in probe.stdout and probe.stdout.split()[-2:] == [
        "True", "True"
    ], probe.stdout
    samples = tmp_path / "samples"
    subprocess.run([str(VENV_BIN / "sensorpipe"), "samples", "--out", str(samples), "--trains",
                    "1", "--hours", "26", "--interval-seconds", "300"],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    build = tmp_path / "build"
    overrides = {
        "SENSORPIPE__SOURCE__KIND": "replay",
        "SENSORPIPE__SOURCE__REPLAY_PATH": str(samples / "telemetry"),
        "SENSORPIPE__WAREHOUSE__KIND": "none",
        "SENSORPIPE__LAKE__EVENTS_PATH": str(build / "lake/events"),
        "SENSORPIPE__LAKE__QUARANTINE_PATH": str(build / "lake/quarantine"),
        "SENSORPIPE__LAKE__CHECKPOINT_ROOT": str(build / "checkpoints"),
        "SENSORPIPE__LAKE__ANOMALIES_PATH": str(build / "lake/anomalies"),
        "SENSORPIPE__LAKE__COMPACTED_PATH": str(build / "lake/compacted"),
        "SENSORPIPE__ALERTS__OUTBOX_PATH": str(build / "outbox"),
        "SENSORPIPE__LINEAGE__PATH": str(build / "lineage"),
    }
    submit = [str(VENV_BIN / "spark-submit"), "--master", "local[2]", "--py-files",
              str(cluster_dist / "dist/sensorpipe.zip")]  # fmt: skip
    summary = tmp_path / "summary.json"
    stream = subprocess.run(
        [*submit, str(ROOT / "jobs/stream_sensor_anomalies.py"), "--config",
         str(ROOT / "conf/local.yaml"), "--summary-json", str(summary)],
        env={**env, **overrides}, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert stream.returncode == 0, _errors(stream.stderr) + stream.stdout[-3000:]
    counts = json.loads((samples / "manifest.json").read_text())["counts"]
    result = json.loads(summary.read_text())
    assert result["records_in"] == counts["records"] and result["valid"] == counts["valid"]
    assert str(cluster_dist / "dist/sensorpipe.zip") in result["code"], "ran the checkout"
    day = sorted(p.name for p in (build / "lake/events").glob("event_date=*"))[0].split("=")[1]
    compact = subprocess.run(
        [*submit, str(ROOT / "jobs/compact_lake.py"), "--config", str(ROOT / "conf/local.yaml"),
         "--date", day],
        env={**env, **overrides}, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert compact.returncode == 0, _errors(compact.stderr) + compact.stdout[-3000:]
    assert list((build / "lake/compacted").glob(f"event_date={day}/**/*.parquet"))
