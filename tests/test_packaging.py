"""Artifacts a cluster gets: the wheel, and the --py-files zip run through spark-submit."""

import json
import os
import platform
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


@pytest.mark.slow
def test_readme_spark_submit_line_matches_make_run(tmp_path, kinesalite, postgres, warehouse_db):
    """The README's spark-submit line, with the --py-files zip, reading the samples from
    Kinesis and loading the warehouse as `make run` does, gives the manifest's counts."""
    zip_path = tmp_path / "sensorpipe.zip"
    subprocess.run(
        [sys.executable, "-m", "zipfile", "-c", str(zip_path), "sensorpipe"],
        cwd=ROOT / "lib",
        check=True,
    )
    readme = (ROOT / "README.md").read_text()
    assert "spark-submit --master 'local[2]' --py-files dist/sensorpipe.zip" in readme
    stream = f"readme-{tmp_path.name}"
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "SENSORPIPE_KINESIS_ENDPOINT": kinesalite.endpoint_url,
        "SENSORPIPE_PG_PORT": str(postgres.port),
        "SENSORPIPE__WAREHOUSE__DATABASE": warehouse_db,
        "SENSORPIPE__SOURCE__STREAM_NAME": stream,
        "SENSORPIPE__LAKE__EVENTS_PATH": str(tmp_path / "lake/events"),
        "SENSORPIPE__LAKE__QUARANTINE_PATH": str(tmp_path / "lake/quarantine"),
        "SENSORPIPE__LAKE__CHECKPOINT_ROOT": str(tmp_path / "checkpoints"),
        "SENSORPIPE__LAKE__ANOMALIES_PATH": str(tmp_path / "lake/anomalies"),
        "SENSORPIPE__ALERTS__OUTBOX_PATH": str(tmp_path / "outbox"),
    }
    subprocess.run(
        [
            str(VENV_BIN / "sensorpipe"),
            "produce",
            "--endpoint-url",
            kinesalite.endpoint_url,
            "--stream",
            stream,
            "--create-shards",
            "2",
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    summary_path = tmp_path / "summary.json"
    subprocess.run(
        [
            str(VENV_BIN / "spark-submit"),
            "--master",
            "local[2]",
            "--py-files",
            str(zip_path),
            "jobs/stream_sensor_anomalies.py",
            "--config",
            "conf/local.yaml",
            "--summary-json",
            str(summary_path),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    summary = json.loads(summary_path.read_text())
    manifest = json.loads((ROOT / "samples/manifest.json").read_text())
    assert summary["records_in"] == manifest["counts"]["records"]
    assert summary["valid"] == manifest["counts"]["valid"]
    assert {k: v for k, v in summary["quarantined"].items() if v} == manifest["counts"][
        "quarantined"
    ]
    assert len(summary["events"]["partitions_written"]) == manifest["counts"]["event_partitions"]
    assert summary["aggregate_rows_loaded"] == manifest["counts"]["valid"]  # 1-minute windows
    assert str(zip_path) in summary["code"], "the job ran the zip's code, not the checkout's"


# The developer and operator tools (now tools/sensorpipe_tools), where they stood in the runtime
# package, and tools that must never reach a node.
TOOL_MODULES = ("cli.py", "deploy.py", "local_services.py", "samples.py", "producer.py",
                "plot.py", "health/synthetic.py", "synthetic_hospital.py")  # fmt: skip
NEVER_ON_THE_CLUSTER = ("sensorpipe_tools", "aws_cdk", "checkov", "cfn_lint", "pyspark/", "awscli")


@pytest.mark.slow
def test_cluster_artifacts_hold_the_runtime_package_and_no_tool(tmp_path):
    """`make dist`: the wheel, the --py-files zip and the dependency archive, listed."""
    subprocess.run(
        ["make", "--no-print-directory", "-s", "dist", f"DIST={tmp_path}/dist",
         f"DIST_VENV={tmp_path}/venv"],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
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


@pytest.mark.slow
def test_make_run_is_quiet_and_ends_with_the_summary():
    """`make run` as a new user sees it: no Java stack trace, no Python worker banner, one line
    per micro-batch, and the run summary last, with the manifest's counts. (Spark's logs are in
    build/logs/.) Ports are free ones, so a developer's own make run is not disturbed."""
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
