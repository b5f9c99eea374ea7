"""Hospital device telemetry through the streaming job (issue 12): the synthetic hospital's
monitors and pacemakers, scored with state per (device, signal), everything in the protected
zone, the incidents in the clinical alerts table, which the patient snapshot joins.

The device job runs as a separate process (as on EMR, and so its log is a real log to scan),
over the generated telemetry replayed from files; the database is a real PostgreSQL."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from sensorpipe.anomaly.evaluation import evaluate
from sensorpipe.config import ConfigError, load_settings
from sensorpipe_tools.hospital_telemetry import HospitalTelemetrySpec
from sensorpipe_tools.hospital_telemetry import generate as generate_telemetry

from tests.local_settings import ROOT
from tests.test_health import AS_OF, _zone_values, new_hospital

CONFIG = "conf/hospital-stream-local.yaml"


def device_environ(tmp: Path, protected: Path, samples: Path) -> dict[str, str]:
    """conf/hospital-stream-local.yaml replaying `samples`, its outputs in `protected`."""
    return {
        "SENSORPIPE__SOURCE__KIND": "replay",
        "SENSORPIPE__SOURCE__REPLAY_PATH": str(samples / "telemetry"),
        "SENSORPIPE__LAKE__PROTECTED_ROOT": str(protected),
        "SENSORPIPE__LAKE__EVENTS_PATH": str(protected / "device_events"),
        "SENSORPIPE__LAKE__QUARANTINE_PATH": str(protected / "device_quarantine"),
        "SENSORPIPE__LAKE__CHECKPOINT_ROOT": str(protected / "checkpoints/device_stream"),
        "SENSORPIPE__LAKE__ANOMALIES_PATH": str(protected / "clinical_alerts"),
        "SENSORPIPE__ANOMALY__RESIDENT_DIR": str(protected / "resident_detectors"),
        "SENSORPIPE__LINEAGE__PATH": str(protected / "lineage"),
    }


@pytest.fixture(scope="module")
def devices(spark, postgres, tmp_path_factory):
    """A hospital imported, its devices' telemetry through the device stream job, then the
    snapshot as of AS_OF with the job's incidents."""
    tmp = tmp_path_factory.mktemp("hospital-devices")
    hospital = new_hospital(postgres, tmp)
    protected = Path(hospital.settings.protected.root)
    samples = tmp / "device-samples"
    spec = HospitalTelemetrySpec(hospital_patients=60, monitors=4, pacemakers=2, hours=10)
    manifest = generate_telemetry(spec, samples)
    environ = device_environ(tmp, protected, samples)
    log = tmp / "device-stream.log"
    shm_before = set(os.listdir("/dev/shm"))
    resident = protected / "resident_detectors"
    resident_seen = False  # the detectors live as long as the job's JVM (anomaly/reaper.py)
    with open(log, "wb") as out:
        job = subprocess.Popen(
            [sys.executable, "jobs/stream_sensor_anomalies.py", "--config", CONFIG,
             "--manifest", str(samples / "manifest.json"),
             "--summary-json", str(tmp / "summary.json")],
            cwd=ROOT, env={**os.environ, **environ}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 600
        while True:  # looking into the zone while the job runs, until it ends
            resident_seen = resident_seen or any(resident.rglob("*.det"))
            try:
                job.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    job.kill()
                    pytest.fail("the device stream job did not finish in 600 s")
    hospital.environ["SENSORPIPE__DEVICE_ANOMALIES_PATH"] = str(protected / "clinical_alerts")
    assert hospital.ingest() == 0
    assert hospital.snapshot() == 0
    return {
        "hospital": hospital, "manifest": manifest, "returncode": job.returncode, "log": log,
        "summary": json.loads((tmp / "summary.json").read_text()), "protected": protected,
        "lineage": tmp / "lineage", "shm_new": set(os.listdir("/dev/shm")) - shm_before,
        "resident_seen": resident_seen, "resident": resident,
    }  # fmt: skip


def _watchers_of(folder: Path) -> list[int]:
    """The pids of the resident-store watchers (anomaly/reaper.py) of folders under `folder`."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:  # a process that just ended
            continue
        if "sensorpipe.anomaly.reaper" in words and any(w.startswith(str(folder)) for w in words):
            pids.append(int(cmdline.parent.name))
    return pids


def _wait_for_exit(pid: int, timeout_s: float) -> None:
    """Until a process that is not our child ends (a pidfd becomes readable when it does)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        assert ready, f"process {pid} still running after {timeout_s} s"
    finally:
        os.close(fd)


def test_device_run_reconciles_as_planted_and_flags_every_episode(spark, devices):
    summary, manifest = devices["summary"], devices["manifest"]
    log = devices["log"].read_text()
    assert devices["returncode"] == 0, log[-3000:]
    assert summary["reconciled"]
    assert summary["records_in"] == manifest["counts"]["records"]
    assert summary["valid"] == manifest["counts"]["valid"]
    assert {r: n for r, n in summary["quarantined"].items() if n} == manifest["counts"][
        "quarantined"
    ]
    assert "quarantine per reason as planted" in log
    episodes = len(manifest["anomalies"])
    assert f"injected anomalies flagged: {episodes}/{episodes}" in log  # the job's check
    events = spark.read.parquet(str(devices["protected"] / "device_events"))
    assert events.where("is_anomaly IS NULL").count() == 0  # every reading scored
    evaluation = evaluate(
        events.select("device_id", "sensor", "event_time", "is_anomaly").toPandas(),
        manifest["anomalies"],
    )
    assert evaluation.recall == 1.0 and evaluation.false_alarm_rate < 0.001, evaluation.render()


def test_device_readings_and_incidents_stay_in_the_protected_zone(devices):
    protected, tmp = devices["protected"], devices["protected"].parent
    for table in ("device_events", "device_quarantine", "clinical_alerts", "checkpoints",
                  "lineage"):  # fmt: skip
        assert any((protected / table).rglob("*.*")), table
    # The resident detectors (named by device serial, holding its readings) were in the zone
    # too while the job ran, and nothing of the run appeared in the shared /dev/shm (issue 30,
    # item 9); once its JVM ended, its executor's folder went (anomaly/reaper.py).
    assert devices["resident_seen"]
    assert devices["shm_new"] == set()
    for pid in _watchers_of(devices["resident"]):  # the watchers end once they removed them
        _wait_for_exit(pid, timeout_s=30)
    assert not any(devices["resident"].rglob("*.det")), "the ended job's resident detectors stayed"
    # Beside the protected zone: the snapshot's general zone, lineage, and the test's own
    # input and output (telemetry, log, summary). No shadow documents, no other table.
    assert {p.name for p in tmp.iterdir()} == {
        "protected", "general", "lineage", "device-samples", "device-stream.log", "summary.json",
    }  # fmt: skip
    assert {p.name for p in (tmp / "general").iterdir()} == {
        "patient_profile", "billing_discrepancies",
    }  # fmt: skip


def test_snapshot_device_alert_counts_equal_the_protected_alerts_table(spark, devices):
    hospital = devices["hospital"]
    protected = devices["protected"]
    alerts = spark.read.parquet(str(protected / "clinical_alerts")).where("is_anomaly")
    owners = (
        spark.read.parquet(str(protected / "device_readings"))
        .select("patient_id", "device_id")
        .distinct()
    )
    expected = {
        r.patient_id: r["count"]
        for r in alerts.join(owners, "device_id").groupBy("patient_id").count().collect()
    }
    profile = spark.read.parquet(str(protected / f"patient_profile/as_of={AS_OF}"))
    got = {r.patient_id: r.device_alert_count for r in profile.collect() if r.device_alert_count}
    assert got == expected and len(got) == 6  # the 4 monitors' and 2 pacemakers' patients
    # The general zone's profile carries the same counts, per token, without the serials.
    general = spark.read.parquet(f"{hospital.settings.general.root}/patient_profile")
    assert sorted(r.device_alert_count for r in general.collect() if r.device_alert_count) == (
        sorted(expected.values())
    )
    assert general.select(F.explode("device_alerts").alias("a")).select("a.*").columns == [
        c for c in ("sensor", "event_time", "anomaly_score", "alert_severity")
    ]


def _identifiers(devices) -> list[tuple[str, str]]:
    hospital = devices["hospital"]
    kinds = ("mrn", "first_name", "last_name", "ssn", "birth_date", "address", "phone")
    people = [(k, p[k]) for p in hospital.data.manifest["identifiers"] for k in kinds]
    serials = [("device_serial", s) for s in hospital.data.manifest["device_serials"]]
    return people + serials


def test_nothing_identifying_in_the_general_zone_lineage_or_logs(spark, devices):
    hospital = devices["hospital"]
    identifiers = _identifiers(devices)
    general = Path(hospital.settings.general.root)
    texts = {
        "general zone": "\n".join(v[2] for v in _zone_values(spark, str(general)))
        + "\n".join(str(p) for p in general.rglob("*")),
        "lineage": "\n".join(p.read_text() for p in devices["lineage"].rglob("*") if p.is_file()),
        "device job log": devices["log"].read_text(errors="replace"),
    }
    assert all(len(t) > 1000 for t in texts.values())
    leaks = {
        where: sorted({kind for kind, value in identifiers if value in text})
        for where, text in texts.items()
    }
    assert leaks == {where: [] for where in texts}
    # The scan can fail: the protected alerts table is full of serials.
    alerts = spark.read.parquet(str(devices["protected"] / "clinical_alerts"))
    serials = {r.device_id for r in alerts.select("device_id").distinct().collect()}
    assert serials and serials <= set(hospital.data.manifest["device_serials"])


def test_the_hospital_catalogue_and_zone_are_checked_at_start(tmp_path):
    base = device_environ(tmp_path, tmp_path / "protected", tmp_path / "samples")
    settings = load_settings(ROOT / CONFIG, environ=base)
    assert settings.decode.catalogue == "hospital" and settings.alerts.kind == "table"
    refused = {
        "SENSORPIPE__DECODE__CATALOGUE": ("pharmacy", "decode.catalogue"),
        "SENSORPIPE__LAKE__EVENTS_PATH": (str(tmp_path / "general/events"), "lake.events_path"),
        "SENSORPIPE__LAKE__CHECKPOINT_ROOT": (str(tmp_path / "ck"), "lake.checkpoint_root"),
        "SENSORPIPE__WAREHOUSE__KIND": ("postgres", "warehouse.kind"),
        "SENSORPIPE__ALERTS__KIND": ("outbox", "alerts.kind"),
        "SENSORPIPE__LAKE__PROTECTED_ROOT": ("", "lake.protected_root"),
        # Resident detectors hold readings under a serial: not in the shared /dev/shm.
        "SENSORPIPE__ANOMALY__RESIDENT_DIR": ("/dev/shm", "anomaly.resident_dir"),
        "SENSORPIPE__LINEAGE__PATH": (str(tmp_path / "lineage"), "lineage.path"),
    }
    for variable, (value, field_name) in refused.items():
        with pytest.raises(ConfigError, match=field_name.replace(".", r"\.")):
            load_settings(ROOT / CONFIG, environ={**base, variable: value})


@pytest.mark.parametrize("escape", ["protected/../lake/events", "protected/./../../x/events",
                                    "protected//../events"])
def test_a_path_that_climbs_out_of_the_protected_zone_is_refused(tmp_path, escape):
    """Paths are compared as Hadoop and the OS resolve them: a text prefix test passed
    `<protected root>/../lake/events`, which lands outside the zone (issue 30, item 8)."""
    base = device_environ(tmp_path, tmp_path / "protected", tmp_path / "samples")
    with pytest.raises(ConfigError, match=r"^lake\.events_path: .* is outside the protected"):
        load_settings(ROOT / CONFIG,
                      environ={**base, "SENSORPIPE__LAKE__EVENTS_PATH": str(tmp_path / escape)})
    s3 = {**base, "SENSORPIPE__LAKE__PROTECTED_ROOT": "s3://phi/hospital",
          "SENSORPIPE__LAKE__EVENTS_PATH": "s3://phi/hospital/../../lake/raw/events",
          "SENSORPIPE__LAKE__QUARANTINE_PATH": "s3://phi/hospital/q",
          "SENSORPIPE__LAKE__CHECKPOINT_ROOT": "s3://phi/hospital/c",
          "SENSORPIPE__LAKE__ANOMALIES_PATH": "s3://phi/hospital/a"}  # fmt: skip
    with pytest.raises(ConfigError, match=r"^lake\.events_path: .* is outside the protected"):
        load_settings(ROOT / CONFIG, environ=s3)
    inside = {**s3, "SENSORPIPE__LAKE__EVENTS_PATH": "s3://phi/hospital/x/../device_events",
              "SENSORPIPE__ANOMALY__RESIDENT_MB": "0",
              "SENSORPIPE__LINEAGE__PATH": "s3://phi/hospital/lineage"}  # fmt: skip
    assert load_settings(ROOT / CONFIG, environ=inside)


def test_reports_and_logs_name_a_device_by_a_keyed_reference_not_its_serial(tmp_path):
    """An unkeyed 48-bit digest of a guessable serial was reversed for all 720,000 serial x
    sensor pairs in 0.1 s, and the manifest check printed missed episodes' serials (issue 30,
    item 3). References are HMACs under the PHI token key for protected readings."""
    import hashlib
    import hmac

    from sensorpipe.anomaly.evaluation import Evaluation
    from sensorpipe.anomaly.spark import key_ref
    from sensorpipe.logref import device_namer, log_key

    key_hex = "ab" * 32
    base = device_environ(tmp_path, tmp_path / "protected", tmp_path / "samples")
    hospital = load_settings(ROOT / CONFIG, environ=base)
    serial = "PM-7F3A21"
    name = device_namer(hospital, {"SENSORPIPE_PHI_TOKEN_KEY": key_hex})
    expected = hmac.new(bytes.fromhex(key_hex), serial.encode(), hashlib.sha256).hexdigest()[:16]
    assert name(serial) == f"device {expected}"
    missed = Evaluation(1, 0, 0, 0, 10, [{"device_id": serial, "sensor": "heart_rate",
                                           "kind": "tachycardia", "start": "2026-12-01"}])
    assert serial not in missed.render(name) and expected in missed.render(name)
    # The scorer's log reference of a (device, sensor) key: keyed the same way.
    log = log_key(hospital, {"SENSORPIPE_PHI_TOKEN_KEY": key_hex})
    ref = key_ref((serial, "heart_rate"), log)
    assert ref == hmac.new(bytes.fromhex(key_hex), f"{serial}\x00heart_rate".encode(),
                           hashlib.sha256).hexdigest()[:16]  # fmt: skip
    unkeyed = hashlib.blake2b(f"{serial}\x00heart_rate".encode(), digest_size=6).hexdigest()
    assert unkeyed not in ref
    # Trains are no one's identity: their reports name them.
    trains = load_settings(ROOT / "conf/local.yaml", environ={})
    assert device_namer(trains)("train-01") == "train-01"
