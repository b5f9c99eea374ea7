"""The hospital: JDBC ingest from a real PostgreSQL seeded by the generator, quarantine,
patient snapshots, the clinical-billing cross-reference and the PHI boundary."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest
from pyspark.sql import functions as F
from sensorpipe.config import HealthSettings
from sensorpipe.health.ingest import ProtectedLayout, read_protected
from sensorpipe.health.tables import SOURCE_TABLES, TABLES_BY_NAME
from sensorpipe.phi import BoundaryError, GeneralFrame, Tokenizer, cross, token_of, write_general
from sensorpipe_tools.synthetic_hospital import (
    HospitalData,
    HospitalSpec,
    generate,
    increment,
    load_into_postgres,
    upsert_rows,
)

from tests.local_settings import ROOT, health_environ, health_settings, run_job

AS_OF = "2026-06-30"
_databases = iter(range(1000))


@dataclass
class Hospital:
    data: HospitalData
    dsn: str
    settings: HealthSettings
    environ: dict[str, str]
    key: str

    def ingest(self) -> int:
        return run_job("ingest_jdbc", ["--config", "conf/health-local.yaml"], self.environ)

    def snapshot(self, as_of: str = AS_OF) -> int:
        argv = ["--config", "conf/health-local.yaml", "--as-of", as_of]
        return run_job("patient_profile_snapshot", argv, self.environ)

    def source_keys(self, table: str) -> set[int]:
        key = TABLES_BY_NAME[table].key
        with psycopg.connect(self.dsn) as conn:
            return {r[0] for r in conn.execute(f"SELECT {key} FROM {table}")}


def new_hospital(postgres, tmp: Path, patients: int = 60) -> Hospital:
    name = f"hospital_{next(_databases)}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    dsn = f"host=127.0.0.1 port={postgres.port} user=sensorpipe dbname={name}"
    data = generate(HospitalSpec(seed=7, patients=patients))
    load_into_postgres(dsn, data)
    key = secrets.token_hex(32)  # a fresh key per test database, never one from the repo
    environ = {**health_environ(tmp, postgres.port, name), "SENSORPIPE_PHI_TOKEN_KEY": key}
    return Hospital(data, dsn, health_settings(tmp, postgres.port, name), environ, key)


@pytest.fixture(scope="module")
def hospital(spark, postgres, tmp_path_factory):
    """Seeded, imported once and snapshotted as of AS_OF; tests read, none change it."""
    h = new_hospital(postgres, tmp_path_factory.mktemp("hospital"))
    assert h.ingest() == 0
    assert h.snapshot() == 0
    return h


def read_table(spark, h: Hospital, name: str):
    return read_protected(spark, h.settings, TABLES_BY_NAME[name])


def test_discrepancy_table_finds_exactly_the_planted_discrepancies(spark, hospital):
    found = spark.read.parquet(
        f"{hospital.settings.protected.root}/billing_discrepancies/as_of={AS_OF}"
    ).collect()
    planted = {
        (d["kind"], d["encounter_id"], d["claim_id"])
        for d in hospital.data.manifest["discrepancies"]
    }
    assert {(r.kind, r.encounter_id, r.claim_id) for r in found} == planted
    assert len(found) == len(planted) == 8
    duplicates = {r.claim_id: r.related_claim_id for r in found if r.kind == "duplicate_claim"}
    assert duplicates == {
        d["claim_id"]: d["related_claim_id"]
        for d in hospital.data.manifest["discrepancies"]
        if d["kind"] == "duplicate_claim"
    }


def test_bad_rows_are_quarantined_with_reasons_and_counts_reconcile(spark, hospital):
    layout = ProtectedLayout(hospital.settings.protected.root)
    quarantined = set()
    for table in SOURCE_TABLES:
        source = hospital.source_keys(table.name)
        valid = read_table(spark, hospital, table.name)
        path = Path(layout.quarantine_path(table))
        rejected = spark.read.parquet(str(path)).collect() if path.exists() else []
        quarantined |= {(r.source_table, r.source_key, r.reason) for r in rejected}
        valid_keys = {r[0] for r in valid.select(table.key).collect()}
        # Every source row is in exactly one place.
        assert valid.count() == len(valid_keys)
        assert valid_keys | {r.source_key for r in rejected} == source
        assert not valid_keys & {r.source_key for r in rejected}
        assert all(r.detail and r.record for r in rejected)
    assert quarantined == {
        (b["table"], b["key"], b["reason"]) for b in hospital.data.manifest["bad_rows"]
    }


def test_a_quarantined_row_keeps_the_original_record_and_says_why(spark, hospital):
    bad = next(b for b in hospital.data.manifest["bad_rows"] if b["reason"] == "impossible_vital")
    layout = ProtectedLayout(hospital.settings.protected.root)
    row = (
        spark.read.parquet(layout.quarantine_path(TABLES_BY_NAME["clinical.vitals"]))
        .where(F.col("source_key") == bad["key"])
        .first()
    )
    assert row.reason == "impossible_vital" and "outside" in row.detail
    assert json.loads(row.record)["vital_id"] == bad["key"]


def test_patient_profiles_as_of_the_snapshot_date(spark, hospital):
    profile = spark.read.parquet(
        f"{hospital.settings.protected.root}/patient_profile/as_of={AS_OF}"
    )
    rows = {r.patient_id: r for r in profile.collect()}
    data = hospital.data.rows
    assert set(rows) == {p["patient_id"] for p in data["clinical.patients"]}
    some = data["clinical.patients"][0]
    r = rows[some["patient_id"]]
    assert (r.mrn, r.ssn, r.birth_date) == (some["mrn"], some["ssn"], some["birth_date"])
    encounters = [e for e in data["clinical.encounters"] if e["patient_id"] == some["patient_id"]]
    assert r.encounter_count == len(encounters)
    cutoff = datetime(2026, 7, 1, tzinfo=UTC)
    bad = {(b["table"], b["key"]) for b in hospital.data.manifest["bad_rows"]}
    active = {
        d["icd10_code"]
        for d in data["clinical.diagnoses"]
        if d["patient_id"] == some["patient_id"]
        and ("clinical.diagnoses", d["diagnosis_id"]) not in bad
        and (d["resolved_at"] is None or d["resolved_at"] >= cutoff)
    }
    assert set(r.active_diagnoses or []) == active
    vitals = [
        v
        for v in data["clinical.vitals"]
        if v["patient_id"] == some["patient_id"] and ("clinical.vitals", v["vital_id"]) not in bad
    ]
    latest = max(vitals, key=lambda v: (v["measured_at"], v["vital_id"]))
    assert r.heart_rate == latest["heart_rate"]
    # Without a clinical alerts table (no device stream run) no patient has device alerts
    # (test_hospital_devices has them from the stream job's incidents).
    assert not any(row.device_alert_count for row in rows.values())


def test_an_earlier_as_of_date_sees_less(spark, hospital, tmp_path):
    assert hospital.snapshot("2026-02-01") == 0
    early = spark.read.parquet(
        f"{hospital.settings.protected.root}/patient_profile/as_of=2026-02-01"
    )
    late = spark.read.parquet(f"{hospital.settings.protected.root}/patient_profile/as_of={AS_OF}")
    assert (
        early.agg(F.sum("encounter_count")).first()[0]
        < late.agg(F.sum("encounter_count")).first()[0]
    )


def _zone_values(spark, root: str, only: str | None = None) -> list[tuple[str, str, str]]:
    """(table, column, value as text) for every column of every output under a zone's root."""
    values = []
    for table in sorted(Path(root).iterdir()):
        if only and table.name != only:
            continue
        df = spark.read.parquet(str(table))
        texts = [F.to_json(F.struct(F.col(c))).alias(c) for c in df.columns]
        for row in df.select(*texts).collect():
            values += [(table.name, c, row[c]) for c in df.columns]
    return values


def test_general_zone_holds_no_identifier_from_the_manifest(spark, hospital):
    values = _zone_values(spark, hospital.settings.general.root)
    assert {v[0] for v in values} == {"patient_profile", "billing_discrepancies"}
    assert len(values) > 1000
    identifiers = [
        (kind, person[kind])
        for person in hospital.data.manifest["identifiers"]
        for kind in ("mrn", "first_name", "last_name", "ssn", "birth_date", "address", "phone")
    ]
    text = "\n".join(v[2] for v in values)
    leaks = [(kind, value) for kind, value in identifiers if value in text]
    assert leaks == []
    # The check can fail: the protected profile, scanned the same way, is full of them.
    protected = "\n".join(
        v[2] for v in _zone_values(spark, hospital.settings.protected.root, "patient_profile")
    )
    assert sum(value in protected for _, value in identifiers) == len(identifiers)


def test_general_zone_tokens_are_keyed_hmacs_and_dates_are_generalised(spark, hospital):
    import hashlib
    import hmac

    general = spark.read.parquet(f"{hospital.settings.general.root}/patient_profile")
    patient = hospital.data.rows["clinical.patients"][0]
    # The token computed here, by HMAC-SHA256 over "<domain>|<id>" with the key (the rule in
    # docs/hospital.md), not by the code under test's own token_of.
    expected = hmac.new(bytes.fromhex(hospital.key), f"patient|{patient['patient_id']}".encode(),
                        hashlib.sha256).hexdigest()  # fmt: skip
    row = general.where(F.col("patient_token") == expected).first()
    assert row is not None and row.birth_year == patient["birth_date"].year
    assert "patient_id" not in general.columns and "birth_date" not in general.columns
    # Dates about a person cross as their year alone: January 1st (a month's truncation, which
    # kept the month, passed the old `day == 1`).
    encounters = [r.last_encounter_at for r in general.collect() if r.last_encounter_at]
    assert encounters and all((d.month, d.day) == (1, 1) for d in encounters)
    assert all(getattr(d, "hour", 0) == 0 for d in encounters)
    assert token_of(b"another key of at least 32 bytes!!", "patient", 1) != token_of(
        bytes.fromhex(hospital.key), "patient", 1
    )


def test_token_key_length_is_counted_in_key_bytes_and_each_output_names_its_key(hospital):
    """32 hex digits are 16 bytes: refused (they passed when characters were counted). Every
    general-zone output records the key's id, so a rotation is visible."""
    from sensorpipe.config import GeneralZoneSettings
    from sensorpipe.lineage import load_runs
    from sensorpipe.phi import token_key, token_key_id

    def key_from(text: str) -> bytes:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SENSORPIPE_PHI_TOKEN_KEY", text)
            return token_key(GeneralZoneSettings(root="/g"))

    with pytest.raises(BoundaryError, match="at least 32 bytes \\(64 hex digits\\), got 16"):
        key_from("ab" * 16)
    with pytest.raises(BoundaryError, match="must be hex"):
        key_from("a passphrase that is long enough in characters")
    assert key_from(hospital.key) == bytes.fromhex(hospital.key) and len(key_from("cd" * 32)) == 32
    runs = load_runs(hospital.settings.lineage)
    snapshots = [
        r for r in runs if r["job"] == "patient_profile_snapshot" and r["status"] == "succeeded"
    ]
    general = [o for r in snapshots for o in r["outputs"] if o["zone"] == "general"]
    assert general and {o["token_key_id"] for o in general} == {
        token_key_id(bytes.fromhex(hospital.key))
    }
    assert hospital.key not in json.dumps(snapshots)


def test_only_declared_crossings_reach_the_general_zone(spark, hospital):
    profile = spark.read.parquet(
        f"{hospital.settings.protected.root}/patient_profile/as_of={AS_OF}"
    )
    tokenizer = Tokenizer(hospital.key.encode())
    with pytest.raises(BoundaryError, match="no crossing rule for column.*notes"):
        cross(profile.withColumn("notes", F.lit("free text")), "patient_profile", tokenizer)
    with pytest.raises(BoundaryError, match="not a declared crossing"):
        cross(profile, "patients_raw", tokenizer)
    with pytest.raises(BoundaryError, match="only frames built by phi.cross"):
        write_general(GeneralFrame("patients_raw", profile), hospital.settings.general, AS_OF)
    with pytest.raises(BoundaryError, match="only frames built by phi.cross"):
        write_general(profile, hospital.settings.general, AS_OF)


def test_snapshot_without_a_token_key_fails_at_start_naming_the_field(hospital):
    environ = {**hospital.environ, "SENSORPIPE_PHI_TOKEN_KEY": ""}
    with pytest.raises(Exception, match="general.token_key_env"):
        run_job("patient_profile_snapshot", ["--config", "conf/health-local.yaml",
                                             "--as-of", AS_OF], environ)  # fmt: skip


def test_overlapping_zones_are_refused_at_start(hospital, tmp_path, capsys):
    environ = {**hospital.environ, "SENSORPIPE__GENERAL__ROOT": str(tmp_path / "protected/x")}
    environ["SENSORPIPE__PROTECTED__ROOT"] = str(tmp_path / "protected")
    with pytest.raises(SystemExit) as exit_:
        run_job("ingest_jdbc", ["--config", "conf/health-local.yaml"], environ)
    assert exit_.value.code == 2
    assert "general.root: must not overlap protected.root" in capsys.readouterr().err


# -- incremental ingest ---------------------------------------------------------------------


def _loads(h: Hospital) -> dict[str, list[str]]:
    root = Path(h.settings.protected.root)
    return {
        t.output_name: sorted(p.name for p in (root / t.output_name).glob("load_id=*"))
        for t in SOURCE_TABLES
    }


def test_incremental_ingest_writes_nothing_new_then_only_the_changes(spark, postgres, tmp_path):
    h = new_hospital(postgres, tmp_path, patients=30)
    assert h.ingest() == 0
    first = _loads(h)
    state = {t.name: ProtectedLayout(h.settings.protected.root).committed(t) for t in SOURCE_TABLES}
    files = sorted(str(p) for p in Path(h.settings.protected.root).rglob("*") if p.is_file())

    assert h.ingest() == 0  # nothing new at the source
    assert (
        sorted(str(p) for p in Path(h.settings.protected.root).rglob("*") if p.is_file()) == files
    )
    assert _loads(h) == first

    changes = increment(h.data, seed=11, when=datetime(2026, 7, 3, 8, tzinfo=UTC))
    with psycopg.connect(h.dsn) as conn:
        upsert_rows(conn, changes["insert"])
        upsert_rows(conn, changes["update"])
    assert h.ingest() == 0
    for t in SOURCE_TABLES:
        expected = [r[t.key] for r in changes["insert"].get(t.name, [])]
        expected += [r[t.key] for r in changes["update"].get(t.name, [])]
        committed = ProtectedLayout(h.settings.protected.root).committed(t)
        if not expected:
            assert committed == state[t.name], t.name
            continue
        assert committed["load_id"] == 2
        new = spark.read.parquet(f"{h.settings.protected.root}/{t.output_name}/load_id=2")
        assert sorted(r[0] for r in new.select(t.key).collect()) == sorted(expected), t.name
    patients = read_table(spark, h, "clinical.patients")
    assert patients.count() == 30
    for updated in changes["update"]["clinical.patients"]:
        row = patients.where(F.col("patient_id") == updated["patient_id"]).first()
        assert row.address == updated["address"]


def test_an_unfinished_load_is_ignored_by_readers_and_removed_by_the_next_run(
    spark, postgres, tmp_path
):
    h = new_hospital(postgres, tmp_path, patients=20)
    assert h.ingest() == 0
    # What a run killed after writing but before committing leaves behind: load 2 on disk.
    base = Path(h.settings.protected.root) / "patients"
    shutil.copytree(base / "load_id=1", base / "load_id=2")
    assert read_table(spark, h, "clinical.patients").count() == 20
    assert h.ingest() == 0
    assert not (base / "load_id=2").exists()
    assert read_table(spark, h, "clinical.patients").count() == 20


@pytest.mark.slow
def test_ingest_killed_mid_write_then_rerun_loses_and_duplicates_nothing(spark, postgres, tmp_path):
    h = new_hospital(postgres, tmp_path, patients=60)
    env = {**os.environ, **h.environ, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.Popen(
        [sys.executable, "jobs/ingest_jdbc.py", "--config", "conf/health-local.yaml"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    # Kill while the fourth table is being written: its load folder exists, its commit not.
    target = Path(h.settings.protected.root) / "vitals/load_id=1"
    deadline = time.monotonic() + 120
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert target.exists(), "the job ended before the kill could land"
    layout = ProtectedLayout(h.settings.protected.root)
    assert layout.committed(TABLES_BY_NAME["clinical.patients"])["load_id"] == 1
    assert layout.committed(TABLES_BY_NAME["billing.claims"])["load_id"] == 0

    assert h.ingest() == 0
    bad = {(b["table"], b["key"]) for b in h.data.manifest["bad_rows"]}
    for t in SOURCE_TABLES:
        rows = read_table(spark, h, t.name)
        keys = [r[0] for r in rows.select(t.key).collect()]
        assert len(keys) == len(set(keys)), t.name
        assert set(keys) == {k for k in h.source_keys(t.name) if (t.name, k) not in bad}, t.name
        assert layout.committed(t)["load_id"] == 1, t.name


def test_hospital_seed_command_fills_a_database_and_writes_the_manifest(postgres, tmp_path):
    from sensorpipe_tools.cli import main

    manifest = tmp_path / "manifest.json"
    args = ["hospital-seed", "--port", str(postgres.port), "--database", "hospital_cli",
            "--recreate", "--patients", "10", "--manifest", str(manifest)]  # fmt: skip
    assert main(args) == 0
    dsn = f"host=127.0.0.1 port={postgres.port} user=sensorpipe dbname=hospital_cli"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM clinical.patients").fetchone()[0] == 10
    assert len(json.loads(manifest.read_text())["identifiers"]) == 10
    assert date.fromisoformat(json.loads(manifest.read_text())["as_of"]) == date(2026, 6, 30)


def test_jdbc_reads_are_split_on_the_key_into_parallel_partitions(spark, hospital):
    from sensorpipe.health.ingest import find_increment, jdbc_options, read_increment

    table = TABLES_BY_NAME["clinical.vitals"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SENSORPIPE_PHI_TOKEN_KEY", hospital.key)
        options = jdbc_options(hospital.settings)
    increment = find_increment(spark, options, table, None)
    rows = read_increment(spark, options, table, None, increment, num_partitions=4)
    sizes = rows.rdd.glom().map(len).collect()
    assert len(sizes) == 4 and all(sizes) and sum(sizes) == increment.rows
    # Nothing changed since the import: the increment after its high-water mark is empty.
    mark = ProtectedLayout(hospital.settings.protected.root).committed(table)["high_water_mark"]
    assert find_increment(spark, options, table, mark).rows == 0


def test_the_token_key_file_is_readable_by_its_owner_only(tmp_path):
    """`make run-hospital` makes the key with `sensorpipe phi-key`: mode 0600 whatever the
    umask (it was written with the default umask, 0644 here)."""
    import os
    import stat

    from sensorpipe_tools.cli import main

    old = os.umask(0o022)
    try:
        assert main(["phi-key", "--out", str(tmp_path / "k")]) == 0
        (tmp_path / "empty").touch()
        assert main(["phi-key", "--out", str(tmp_path / "empty")]) == 0
    finally:
        os.umask(old)
    for name in ("k", "empty"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
        assert len(bytes.fromhex((tmp_path / name).read_text().strip())) == 32
    before = (tmp_path / "k").read_text()
    assert main(["phi-key", "--out", str(tmp_path / "k")]) == 0
    assert (tmp_path / "k").read_text() == before  # an existing key is kept


def test_the_general_zone_is_safe_harbor_by_construction(spark, monkeypatch, tmp_path):
    """Ages over 89 become 90 and such a person's birth year goes (it would give the age
    away); every date element but the year goes; no setting keeps months."""
    from datetime import date, datetime

    from sensorpipe.phi import CROSSINGS, DATE, Crossing, Rule, birth_year, token

    probe = Crossing("safe_harbor_probe", {
        "patient_id": token("patient", "patient_token"), "birth_date": birth_year("birth_year"),
        "age_years": Rule("age"), "seen_at": DATE,
    })  # fmt: skip
    monkeypatch.setitem(CROSSINGS, probe.name, probe)
    rows = [(1, date(1930, 5, 2), 96, datetime(2026, 6, 15, 10, 30)),
            (2, date(1980, 3, 4), 46, datetime(2026, 11, 28, 8, 0))]  # fmt: skip
    df = spark.createDataFrame(rows, "patient_id long, birth_date date, age_years int, "
                                     "seen_at timestamp")  # fmt: skip
    general = cross(df, probe.name, Tokenizer(b"k" * 32)).df
    got = sorted((tuple(r) for r in general.drop("patient_token").collect()), key=lambda r: r[1])
    assert got == [(1980, 46, date(2026, 1, 1)), (None, 90, date(2026, 1, 1))]
    with pytest.raises(Exception, match="general.generalise_dates: unknown field"):
        text = (ROOT / "conf/health-local.yaml").read_text()
        path = tmp_path / "health-months.yaml"
        path.write_text(text.replace("general:\n", "general:\n  generalise_dates: month\n"))
        from sensorpipe.config import load_settings

        load_settings(path, kind=HealthSettings, environ={})


def test_ingest_finds_rows_committed_late_with_an_older_version_and_quarantines_null_versions(
    spark, postgres, tmp_path
):
    """A transaction that commits after an import, with an updated_at older than the mark
    that import took, and a row with no updated_at: both were missed for ever by
    `updated_at > mark`. The overlap window finds the first; the second is quarantined, once;
    rows the window reads again are not imported twice."""
    h = new_hospital(postgres, tmp_path, patients=20)
    assert h.ingest() == 0
    late_id, early_id = 3, 4
    slow = psycopg.connect(h.dsn)  # a transaction still open across the next import
    slow.execute("UPDATE clinical.patients SET address = 'committed late', updated_at = now() "
                 "WHERE patient_id = %s", (late_id,))  # fmt: skip
    time.sleep(0.05)
    with psycopg.connect(h.dsn, autocommit=True) as fast:
        fast.execute("UPDATE clinical.patients SET address = 'committed at once', "
                     "updated_at = now() WHERE patient_id = %s", (early_id,))  # fmt: skip
    assert h.ingest() == 0  # finds the early one; its mark is later than the slow update
    slow.commit()
    slow.close()
    with psycopg.connect(h.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO clinical.patients (patient_id, mrn, facility_id, updated_at) "
                     "VALUES (999, 'MRN-NULL', 'F1', NULL)")  # fmt: skip
    assert h.ingest() == 0
    patients = read_table(spark, h, "clinical.patients")
    address = {r.patient_id: r.address for r in patients.collect()}
    assert address[late_id] == "committed late"
    assert address[early_id] == "committed at once"
    assert 999 not in address and patients.count() == 20
    root = Path(h.settings.protected.root)
    load_3 = spark.read.parquet(str(root / "patients" / "load_id=3"))
    assert [r.patient_id for r in load_3.collect()] == [late_id]  # not the early one again
    quarantined = spark.read.parquet(str(root / "_quarantine" / "patients"))
    nulls = quarantined.where("reason = 'null_updated_at'")
    assert [r.source_key for r in nulls.collect()] == [999]
    files = sorted(str(p) for p in root.rglob("*") if p.is_file())
    assert h.ingest() == 0  # the window reads them all again: nothing new, nothing written
    assert sorted(str(p) for p in root.rglob("*") if p.is_file()) == files


def test_zone_paths_are_compared_as_resolved_not_as_text(tmp_path):
    """The clinical alerts table through `..` lands outside the protected zone, and a general
    zone reached through `..` overlaps it: both refused as resolved paths (issue 30, item 8)."""
    from sensorpipe.config import ConfigError, HealthSettings, load_settings

    env = {"SENSORPIPE_PHI_TOKEN_KEY": "00" * 32,
           "SENSORPIPE__PROTECTED__ROOT": str(tmp_path / "protected"),
           "SENSORPIPE__GENERAL__ROOT": str(tmp_path / "general"),
           "SENSORPIPE__DEVICE_ANOMALIES_PATH": str(tmp_path / "protected/clinical_alerts")}
    assert load_settings(ROOT / "conf/health-local.yaml", environ=env, kind=HealthSettings)
    climbing = {**env, "SENSORPIPE__DEVICE_ANOMALIES_PATH":
                str(tmp_path / "protected/../general/clinical_alerts")}  # fmt: skip
    with pytest.raises(ConfigError, match="^device_anomalies_path: .* is outside protected.root"):
        load_settings(ROOT / "conf/health-local.yaml", environ=climbing, kind=HealthSettings)
    inside = {**env, "SENSORPIPE__GENERAL__ROOT": str(tmp_path / "general/../protected/g")}
    with pytest.raises(ConfigError, match="^general.root: must not overlap protected.root"):
        load_settings(ROOT / "conf/health-local.yaml", environ=inside, kind=HealthSettings)
