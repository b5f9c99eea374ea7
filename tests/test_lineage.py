"""Lineage: every run of every job leaves a record, and "what produced this" answers from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sensorpipe.config import LineageSettings
from sensorpipe.lineage import load_runs, what_produced
from sensorpipe_tools.cli import main as cli_main
from sensorpipe_tools.samples import SampleSpec, generate

from tests.local_settings import lake_environ, run_job
from tests.test_health import AS_OF, new_hospital


@pytest.fixture(scope="module")
def sensor_runs(spark, postgres, tmp_path_factory):
    """The streaming job on small samples, then the daily rollup, both as their jobs run."""
    import psycopg

    tmp = tmp_path_factory.mktemp("lineage-sensor")
    samples = tmp / "samples"
    generate(SampleSpec(trains=1, hours=3, anomalies_per_train=0, malformed_per_kind=1), samples)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS lineage_wh")
        conn.execute("CREATE DATABASE lineage_wh")
    environ = {
        **lake_environ(tmp),
        "SENSORPIPE__SOURCE__KIND": "replay",
        "SENSORPIPE__SOURCE__REPLAY_PATH": str(samples / "telemetry"),
        "SENSORPIPE__WAREHOUSE__KIND": "postgres",
        "SENSORPIPE__WAREHOUSE__PORT": str(postgres.port),
        "SENSORPIPE__WAREHOUSE__DATABASE": "lineage_wh",
    }
    assert run_job("stream_sensor_anomalies", ["--config", "conf/local.yaml"], environ) == 0
    assert (
        run_job("batch_daily_rollup", ["--config", "conf/local.yaml", "--all-days"], environ) == 0
    )
    return LineageSettings(str(tmp / "lineage")), tmp


def test_stream_and_rollup_runs_are_recorded_and_chained(sensor_runs):
    lineage, tmp = sensor_runs
    runs = load_runs(lineage)
    assert [r["job"] for r in runs] == ["stream_sensor_anomalies", "batch_daily_rollup"]
    stream, rollup = runs
    assert stream["status"] == rollup["status"] == "succeeded"
    events = next(o for o in stream["outputs"] if o["name"] == str(tmp / "lake/events"))
    assert stream["rows_in"] == events["rows"] + stream["rows_quarantined"] > 0
    # rows_out counts every output: the events and the warehouse's window rows.
    assert stream["rows_out"] == sum(o["rows"] for o in stream["outputs"] if not o["quarantine"])
    assert all(o["schema_fingerprint"] for o in stream["outputs"] if o["kind"] == "path")
    answers = what_produced(lineage, "sensor_daily_aggregates")
    assert [a["run_id"] for a in answers] == [rollup["run_id"]]
    (upstream,) = answers[0]["upstream"]
    assert upstream["run"]["run_id"] == stream["run_id"]
    assert upstream["inputs"] == [str(tmp / "lake/events")]
    # A file inside the events table was produced by the stream run.
    some_file = next(Path(tmp / "lake/events").rglob("*.parquet"))
    assert [a["run_id"] for a in what_produced(lineage, str(some_file))] == [stream["run_id"]]


@pytest.fixture(scope="module")
def hospital_runs(spark, postgres, tmp_path_factory):
    h = new_hospital(postgres, tmp_path_factory.mktemp("lineage-hospital"), patients=15)
    with pytest.raises(Exception, match="no committed load"):
        h.snapshot()  # before any ingest: fails, and the failure is recorded
    assert h.ingest() == 0
    assert h.ingest() == 0  # nothing new: still a run, with zero rows
    assert h.snapshot() == 0
    return h


def test_every_hospital_run_is_recorded_with_inputs_outputs_and_counts(hospital_runs):
    runs = load_runs(hospital_runs.settings.lineage)
    assert [(r["job"], r["status"]) for r in runs] == [
        ("patient_profile_snapshot", "failed"),
        ("ingest_jdbc", "succeeded"),
        ("ingest_jdbc", "succeeded"),
        ("patient_profile_snapshot", "succeeded"),
    ]
    failed, first, again, snapshot = runs
    # The hospital's jobs read protected health information: a failure is recorded by its
    # type, its message (which could quote a record) stays in the job's log (issue 30, item 8).
    assert failed["error"].startswith("IngestError") and "no committed load" not in failed["error"]
    assert first["rows_in"] == first["rows_out"] + first["rows_quarantined"] > 0
    assert {i["name"] for i in first["inputs"]} >= {"clinical.patients", "billing.claims"}
    assert all(i["high_water_mark"] for i in first["inputs"])
    assert (again["rows_in"], again["rows_out"], again["outputs"]) == (0, 0, [])
    assert all(r["code_version"] and r["started_at"] <= r["ended_at"] for r in runs)
    zones = {o["zone"] for o in snapshot["outputs"]}
    assert zones == {"protected", "general"}


def test_what_produced_a_general_zone_file_traces_back_to_the_ingest(hospital_runs):
    settings = hospital_runs.settings
    runs = load_runs(settings.lineage)
    ingest, snapshot = runs[1], runs[3]
    target = next(Path(settings.general.root, f"patient_profile/as_of={AS_OF}").glob("*.parquet"))
    (answer,) = what_produced(settings.lineage, str(target))
    assert answer["run_id"] == snapshot["run_id"]
    # Only the run that wrote data is upstream; the empty re-run wrote nothing.
    assert {u["run"]["run_id"] for u in answer["upstream"]} == {ingest["run_id"]}
    quarantine = f"{settings.protected.root}/_quarantine/vitals"
    assert [a["run_id"] for a in what_produced(settings.lineage, quarantine)] == [ingest["run_id"]]


def test_lineage_command_answers_and_fails_for_unknown_outputs(hospital_runs, capsys):
    path = hospital_runs.settings.lineage.path
    target = f"{hospital_runs.settings.general.root}/billing_discrepancies"
    assert cli_main(["lineage", "what-produced", target, "--lineage-path", path]) == 0
    out = capsys.readouterr().out
    assert "job=patient_profile_snapshot" in out and "job=ingest_jdbc" in out
    assert "read  jdbc billing.claims" in out
    assert cli_main(["lineage", "what-produced", "/nowhere/x", "--lineage-path", path]) == 1
    assert "no recorded run produced /nowhere/x" in capsys.readouterr().out


def test_compaction_rewrites_a_day_one_file_per_hour_and_is_recorded(spark, sensor_runs):
    lineage, tmp = sensor_runs
    environ = {**lake_environ(tmp), "SENSORPIPE__LAKE__COMPACTED_PATH": str(tmp / "compacted")}
    events = spark.read.parquet(str(tmp / "lake/events"))
    day = sorted(r[0] for r in events.select("event_date").distinct().collect())[0]
    expected = events.where(f"event_date = '{day}'")
    argv = ["--config", "conf/local.yaml", "--date", str(day)]
    for _ in range(2):  # a re-run replaces the day, it does not add to it
        assert run_job("compact_lake", argv, environ) == 0
        compacted = spark.read.parquet(str(tmp / "compacted")).where(f"event_date = '{day}'")
        assert compacted.count() == expected.count() > 0
        assert compacted.exceptAll(expected.select(*compacted.columns)).count() == 0
    hours = sorted((tmp / "compacted" / f"event_date={day}").glob("event_hour=*"))
    assert hours and all(len(list(h.glob("*.parquet"))) == 1 for h in hours)
    runs = [r for r in load_runs(lineage) if r["job"] == "compact_lake"]
    assert len(runs) == 2 and runs[-1]["rows_in"] == runs[-1]["rows_out"] == expected.count()


def test_a_failed_table_is_recorded_and_the_other_tables_loads_are_too(postgres, tmp_path):
    """One source table gone: the others are imported and on record, the failed one is
    recorded with its error, and the run fails naming it."""
    import psycopg

    h = new_hospital(postgres, tmp_path, patients=10)
    with psycopg.connect(h.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE billing.claims")
    with pytest.raises(Exception, match="1 table\\(s\\) failed.*billing.claims"):
        h.ingest()
    (run,) = load_runs(h.settings.lineage)
    assert run["status"] == "failed"
    assert [f["part"] for f in run["failures"]] == ["billing.claims"]
    assert "claims" in run["failures"][0]["error"]
    loaded = {o["name"].rsplit("/", 2)[-2] for o in run["outputs"] if not o["quarantine"]}
    assert {"patients", "encounters", "vitals"} <= loaded and "claims" not in loaded


def test_a_killed_run_leaves_its_record_with_what_it_had_committed(tmp_path):
    """The record is written when a run starts and at each checkpoint: a process killed
    after a commit (no finally runs) leaves a record saying so, status "running"."""
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "from sensorpipe.config import LineageSettings\n"
        "from sensorpipe.lineage import recorded_run\n"
        "with recorded_run(LineageSettings(sys.argv[1]), 'ingest_jdbc') as run:\n"
        "    run.wrote('path', '/zone/patients/load_id=1', 10)\n"
        "    run.checkpoint()\n"
        "    os._exit(137)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "lineage")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 137
    (run,) = load_runs(LineageSettings(str(tmp_path / "lineage")))
    assert run["status"] == "running" and run["ended_at"] is None
    assert [o["name"] for o in run["outputs"]] == ["/zone/patients/load_id=1"]


def test_a_protected_runs_failure_is_recorded_by_its_type_not_its_message(tmp_path):
    """A failed run's exception text was copied into its lineage record verbatim, outside the
    protected zone for the hospital's jobs (issue 30, item 8): a message can quote a serial."""
    import pytest
    from sensorpipe.config import LineageSettings
    from sensorpipe.lineage import recorded_run

    settings = LineageSettings(str(tmp_path / "lineage"))
    for protected in (True, False):
        with pytest.raises(ValueError), recorded_run(settings, f"job-{protected}",
                                                     protected=protected):  # fmt: skip
            raise ValueError("device PM-7F3A21 sent a value out of range")
    errors = {r["job"]: r["error"] for r in load_runs(settings)}
    assert errors["job-True"].startswith("ValueError") and "PM-7F3A21" not in errors["job-True"]
    assert "PM-7F3A21" in errors["job-False"]  # a train job's record keeps the message
