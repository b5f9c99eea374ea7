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
