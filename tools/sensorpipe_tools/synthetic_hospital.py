"""A seeded synthetic hospital (no real PHI): the on-premises source the JDBC ingest imports.

    data = generate(HospitalSpec(seed=7))
    load_into_postgres(dsn, data)          # clinical.* and billing.* tables
    data.manifest                          # identifiers, planted discrepancies and bad rows

Every patient has identifiers (name, MRN, SSN in the never-issued 9xx range, birth date,
address, phone), encounters with ICD-10 diagnoses, vitals, lab results, bedside-device readings,
and one billing claim per diagnosis. On top of that clean hospital the generator plants, and
lists in the manifest: claims the clinical record does not support, discharged encounters with
no claim, duplicate claims; rows with null keys, invalid ICD-10 codes and impossible vitals.
`increment` makes a later day's changes (new rows and updated rows) for incremental imports.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sensorpipe.health.tables import SOURCE_TABLES, TABLES_BY_NAME

FACILITIES = ("F01", "F02", "F03")
# Valid ICD-10-CM codes and the LOINC tests that go with them (a small, realistic subset).
DIAGNOSES = {
    "E11.9": "Type 2 diabetes mellitus without complications",
    "I10": "Essential (primary) hypertension",
    "J18.9": "Pneumonia, unspecified organism",
    "N17.9": "Acute kidney failure, unspecified",
    "I48.91": "Unspecified atrial fibrillation",
    "J44.1": "Chronic obstructive pulmonary disease with (acute) exacerbation",
    "K35.80": "Unspecified acute appendicitis",
    "S72.001A": "Fracture of unspecified part of neck of right femur, initial encounter",
    "A41.9": "Sepsis, unspecified organism",
    "I21.4": "Non-ST elevation (NSTEMI) myocardial infarction",
}
LABS = {  # loinc: (name, unit, ref_low, ref_high, typical_mean, sd)
    "2345-7": ("Glucose", "mg/dL", 70.0, 99.0, 95.0, 25.0),
    "2160-0": ("Creatinine", "mg/dL", 0.6, 1.3, 1.0, 0.35),
    "718-7": ("Hemoglobin", "g/dL", 12.0, 17.5, 14.0, 1.8),
    "6690-2": ("Leukocytes", "10*3/uL", 4.5, 11.0, 8.0, 2.5),
    "2823-3": ("Potassium", "mmol/L", 3.5, 5.1, 4.3, 0.5),
}
CHRONIC = {"E11.9", "I10", "I48.91", "J44.1"}  # never resolved
INVALID_ICD10 = ("XYZ.1", "123.4", "E11.99999", "I1O")
FIRST = (
    "Ada",
    "Bram",
    "Chiara",
    "Dmitri",
    "Elif",
    "Farid",
    "Greta",
    "Hiro",
    "Ines",
    "Jonas",
    "Kaia",
    "Luca",
    "Mina",
    "Nils",
    "Oona",
    "Pavel",
    "Quinn",
    "Rosa",
    "Sven",
    "Tamsin",
)
LAST = (
    "Abernathy",
    "Bergström",
    "Castellano",
    "Dunmore",
    "Eklund",
    "Fairweather",
    "Galloway",
    "Halvorsen",
    "Ishikawa",
    "Jablonski",
    "Kowalczyk",
    "Lindqvist",
    "Montague",
    "Nakamura",
    "Oyelaran",
    "Pemberton",
    "Quintero",
    "Rasmussen",
    "Szabo",
    "Thorvaldsen",
)
STREETS = (
    "Juniper Lane",
    "Quarry Road",
    "Harbour Row",
    "Linden Avenue",
    "Mill Street",
    "Orchard Close",
    "Beacon Hill",
    "Tanner Way",
)
TOWNS = (("Ashford", "VT", "05101"), ("Brookfield", "NH", "03201"), ("Carrow", "ME", "04401"))

TABLES = tuple(t.name for t in SOURCE_TABLES)


@dataclass(frozen=True)
class HospitalSpec:
    seed: int = 7
    patients: int = 120
    start: date = date(2026, 1, 5)
    days: int = 150
    # Loaded (updated_at) one day after this; snapshots as of this date see everything.
    as_of: date = date(2026, 6, 30)


@dataclass
class HospitalData:
    spec: HospitalSpec
    rows: dict[str, list[dict[str, Any]]]
    manifest: dict[str, Any] = field(default_factory=dict)


def _ts(day: date, minutes: int) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=minutes)


def generate(spec: HospitalSpec) -> HospitalData:
    rng = random.Random(spec.seed)
    loaded_at = _ts(spec.as_of + timedelta(days=1), 60)
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    ids = {t: 0 for t in TABLES}

    def add(table: str, key: str, row: dict[str, Any]) -> dict[str, Any]:
        ids[table] += 1
        row = {key: ids[table], **row, "updated_at": loaded_at}
        rows[table].append(row)
        return row

    identifiers = []
    for _ in range(spec.patients):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        town, state, zip_code = rng.choice(TOWNS)
        birth = date(1930, 1, 1) + timedelta(days=rng.randrange(365 * 75))
        patient = add(
            "clinical.patients",
            "patient_id",
            {
                "mrn": f"MRN{rng.randrange(10**7, 10**8)}",
                "first_name": first,
                "last_name": last,
                "sex": rng.choice("FM"),
                "birth_date": birth,
                "ssn": f"9{rng.randrange(10, 100)}-{rng.randrange(10, 100)}-"
                f"{rng.randrange(1000, 10000)}",
                "address": f"{rng.randrange(1, 999)} {rng.choice(STREETS)}, "
                f"{town}, {state} {zip_code}",
                "phone": f"({rng.randrange(200, 999)}) 555-{rng.randrange(1000, 10000)}",
                "facility_id": rng.choice(FACILITIES),
            },
        )
        identifiers.append(
            {
                k: str(patient[k])
                for k in (
                    "patient_id",
                    "mrn",
                    "first_name",
                    "last_name",
                    "ssn",
                    "birth_date",
                    "address",
                    "phone",
                )
            }
        )
        for _ in range(rng.randint(1, 3)):
            _encounter(rng, spec, add, patient)
        if rng.random() < 0.3:
            device = f"BEDMON-{patient['patient_id']:04d}"
            start = _ts(spec.start + timedelta(days=rng.randrange(spec.days)), 0)
            for i in range(6):
                add(
                    "clinical.device_readings",
                    "reading_id",
                    {
                        "patient_id": patient["patient_id"],
                        "device_id": device,
                        "metric": "heart_rate",
                        "value": round(rng.gauss(78, 6), 1),
                        "measured_at": start + timedelta(minutes=10 * i),
                    },
                )
    manifest: dict[str, Any] = {
        "seed": spec.seed,
        "as_of": spec.as_of.isoformat(),
        "identifiers": identifiers,
        "discrepancies": _plant_discrepancies(rng, rows, ids, loaded_at),
        "bad_rows": _plant_bad_rows(rng, rows, add),
    }
    _pacemakers(rows, add)
    # Device serials identify their patient: protected health information as the rest.
    manifest["device_serials"] = sorted({r["device_id"] for r in rows["clinical.device_readings"]})
    manifest["counts"] = {t: len(r) for t, r in rows.items()}
    return HospitalData(spec, rows, manifest)


def _encounter(rng: random.Random, spec: HospitalSpec, add: Any, patient: dict) -> None:
    admitted = _ts(spec.start + timedelta(days=rng.randrange(spec.days - 5)), rng.randrange(1440))
    discharged = admitted + timedelta(hours=rng.randrange(4, 96))
    name = f"{patient['first_name']} {patient['last_name']}"
    encounter = add(
        "clinical.encounters",
        "encounter_id",
        {
            "patient_id": patient["patient_id"],
            "facility_id": patient["facility_id"],
            "encounter_type": rng.choice(("inpatient", "emergency", "outpatient")),
            "admitted_at": admitted,
            "discharged_at": discharged,
            # Free text names the patient, as real notes do: it must never leave the protected zone.
            "notes": f"{name} (DOB {patient['birth_date']}) seen; call {patient['phone']}.",
        },
    )
    codes = rng.sample(sorted(DIAGNOSES), rng.randint(1, 2))
    for code in codes:
        resolved = None if code in CHRONIC else discharged + timedelta(days=rng.randrange(3, 40))
        add(
            "clinical.diagnoses",
            "diagnosis_id",
            {
                "encounter_id": encounter["encounter_id"],
                "patient_id": patient["patient_id"],
                "icd10_code": code,
                "diagnosed_at": admitted + timedelta(hours=1),
                "resolved_at": resolved,
            },
        )
        add(
            "billing.claims",
            "claim_id",
            {
                "encounter_id": encounter["encounter_id"],
                "patient_id": patient["patient_id"],
                "icd10_code": code,
                "amount": round(rng.uniform(180, 9000), 2),
                "service_date": discharged.date(),
                "submitted_at": discharged + timedelta(days=2),
            },
        )
    for i in range(rng.randint(2, 4)):
        add(
            "clinical.vitals",
            "vital_id",
            _vitals(rng, encounter, admitted + timedelta(hours=4 * i)),
        )
    for loinc in rng.sample(sorted(LABS), rng.randint(1, 3)):
        _, unit, low, high, mean, sd = LABS[loinc]
        add(
            "clinical.lab_results",
            "lab_id",
            {
                "encounter_id": encounter["encounter_id"],
                "patient_id": patient["patient_id"],
                "loinc_code": loinc,
                "test_name": LABS[loinc][0],
                "value": round(max(0.1, rng.gauss(mean, sd)), 2),
                "unit": unit,
                "ref_low": low,
                "ref_high": high,
                "collected_at": admitted + timedelta(hours=2),
            },
        )


def _vitals(rng: random.Random, encounter: dict, at: datetime, **override: Any) -> dict:
    return {
        "encounter_id": encounter["encounter_id"],
        "patient_id": encounter["patient_id"],
        "measured_at": at,
        "heart_rate": rng.randint(55, 110),
        "systolic_mmhg": rng.randint(100, 150),
        "diastolic_mmhg": rng.randint(60, 95),
        "temperature_c": round(rng.uniform(36.1, 38.4), 1),
        "spo2_pct": rng.randint(91, 100),
        "respiratory_rate": rng.randint(12, 22),
        **override,
    }


def _plant_discrepancies(
    rng: random.Random, rows: dict, ids: dict, loaded_at: datetime
) -> list[dict[str, Any]]:
    """Each on its own encounter, so no planted item hides or creates another."""
    claims_by_encounter: dict[int, list[dict]] = {}
    for claim in rows["billing.claims"]:
        claims_by_encounter.setdefault(claim["encounter_id"], []).append(claim)
    codes_by_encounter: dict[int, set[str]] = {}
    for diag in rows["clinical.diagnoses"]:
        codes_by_encounter.setdefault(diag["encounter_id"], set()).add(diag["icd10_code"])
    chosen = rng.sample(sorted(claims_by_encounter), 9)
    planted = []
    for encounter_id in chosen[:3]:  # billed for a diagnosis the record does not have
        claim = claims_by_encounter[encounter_id][0]
        claim["icd10_code"] = rng.choice(sorted(set(DIAGNOSES) - codes_by_encounter[encounter_id]))
        planted.append(
            {
                "kind": "claim_diagnosis_unsupported",
                "encounter_id": encounter_id,
                "claim_id": claim["claim_id"],
                "icd10_code": claim["icd10_code"],
            }
        )
    for encounter_id in chosen[3:6]:  # discharged, never billed
        dropped = {c["claim_id"] for c in claims_by_encounter[encounter_id]}
        rows["billing.claims"] = [c for c in rows["billing.claims"] if c["claim_id"] not in dropped]
        planted.append(
            {
                "kind": "encounter_without_claim",
                "encounter_id": encounter_id,
                "claim_id": None,
                "icd10_code": None,
            }
        )
    for encounter_id in chosen[6:8]:  # billed twice
        original = claims_by_encounter[encounter_id][0]
        ids["billing.claims"] += 1
        copy = {
            **original,
            "claim_id": ids["billing.claims"],
            "submitted_at": original["submitted_at"] + timedelta(days=9),
            "updated_at": loaded_at,
        }
        rows["billing.claims"].append(copy)
        planted.append(
            {
                "kind": "duplicate_claim",
                "encounter_id": encounter_id,
                "claim_id": copy["claim_id"],
                "icd10_code": copy["icd10_code"],
                "related_claim_id": original["claim_id"],
            }
        )
    return planted


def _plant_bad_rows(rng: random.Random, rows: dict, add: Any) -> list[dict[str, Any]]:
    """Extra rows (never the ones billing refers to), so quarantining them changes nothing else."""
    encounters = rows["clinical.encounters"]
    bad = []

    def plant(table: str, key: str, reason: str, row: dict) -> None:
        bad.append({"table": table, "key": add(table, key, row)[key], "reason": reason})

    for encounter in rng.sample(encounters, 2):
        at = encounter["admitted_at"] + timedelta(minutes=30)
        plant(
            "clinical.vitals", "vital_id", "null_key", _vitals(rng, encounter, at, patient_id=None)
        )
    encounter = rng.choice(encounters)
    plant(
        "clinical.lab_results",
        "lab_id",
        "null_key",
        {
            "encounter_id": None,
            "patient_id": encounter["patient_id"],
            "loinc_code": "2345-7",
            "test_name": "Glucose",
            "value": 101.0,
            "unit": "mg/dL",
            "ref_low": 70.0,
            "ref_high": 99.0,
            "collected_at": encounter["admitted_at"],
        },
    )
    for code in INVALID_ICD10[:3]:
        encounter = rng.choice(encounters)
        plant(
            "clinical.diagnoses",
            "diagnosis_id",
            "invalid_icd10",
            {
                "encounter_id": encounter["encounter_id"],
                "patient_id": encounter["patient_id"],
                "icd10_code": code,
                "diagnosed_at": encounter["admitted_at"],
                "resolved_at": None,
            },
        )
    for override in (
        {"heart_rate": 420},
        {"temperature_c": 51.3},
        {"spo2_pct": 130},
        {"systolic_mmhg": 12},
    ):
        encounter = rng.choice(encounters)
        at = encounter["admitted_at"] + timedelta(minutes=45)
        plant(
            "clinical.vitals",
            "vital_id",
            "impossible_vital",
            _vitals(rng, encounter, at, **override),
        )
    return bad


def _pacemakers(rows: dict, add: Any) -> None:
    """Every third patient with a bedside monitor also has a pacemaker: its serial and first
    interrogations in the device table (how the snapshot finds its patient). Added last and
    without the generator's random stream, so every other row stays as it was."""
    readings = rows["clinical.device_readings"]
    monitored = sorted({(r["patient_id"], r["measured_at"]) for r in readings
                        if r["device_id"].startswith("BEDMON-")})  # fmt: skip
    first_seen: dict[int, datetime] = {}
    for patient_id, at in monitored:
        first_seen.setdefault(patient_id, at)
    for patient_id in sorted(first_seen)[::3]:
        for i in range(3):
            add(
                "clinical.device_readings",
                "reading_id",
                {
                    "patient_id": patient_id,
                    "device_id": f"PACER-{patient_id:04d}",
                    "metric": "pacing_rate",
                    "value": 70.0,
                    "measured_at": first_seen[patient_id] + timedelta(hours=8 * i),
                },
            )


def increment(data: HospitalData, seed: int, when: datetime) -> dict[str, Any]:
    """A later day's changes: new encounters (with their rows) and updated patient addresses.
    Returns {"insert": {table: rows}, "update": {table: rows}} with updated_at = `when`."""
    rng = random.Random(seed)
    inserts: dict[str, list[dict]] = {t: [] for t in TABLES}
    next_id = {t: max(r[TABLES_BY_NAME[t].key] for r in data.rows[t]) for t in TABLES}

    def add(table: str, key: str, row: dict) -> dict:
        next_id[table] += 1
        row = {key: next_id[table], **row, "updated_at": when}
        inserts[table].append(row)
        return row

    spec = HospitalSpec(
        seed=seed, start=data.spec.as_of - timedelta(days=6), days=6, as_of=data.spec.as_of
    )
    for patient in rng.sample(data.rows["clinical.patients"], 3):
        _encounter(rng, spec, add, patient)
    updates = []
    for patient in rng.sample(data.rows["clinical.patients"], 2):
        town, state, zip_code = rng.choice(TOWNS)
        updates.append(
            {
                **patient,
                "address": f"{rng.randrange(1, 999)} Larch Rise, {town}, {state} {zip_code}",
                "updated_at": when,
            }
        )
    return {
        "insert": {t: r for t, r in inserts.items() if r},
        "update": {"clinical.patients": updates},
    }


# -- the local stand-in for the on-premises database ------------------------------------------


def create_source_tables(conn: Any) -> None:
    """Schemas and tables in a PostgreSQL database (psycopg connection)."""
    for schema in sorted({t.name.split(".")[0] for t in SOURCE_TABLES}):
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for table in SOURCE_TABLES:
        conn.execute(table.ddl())


def upsert_rows(conn: Any, rows: dict[str, list[dict[str, Any]]]) -> int:
    """Insert rows, or update them in place when their key exists (as the hospital's systems
    do); returns the number of rows written."""
    written = 0
    for name, table_rows in rows.items():
        table = TABLES_BY_NAME[name]
        columns = [c for c, _ in table.columns]
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != table.key)
        sql = (
            f"INSERT INTO {name} ({', '.join(columns)}) VALUES "
            f"({', '.join(['%s'] * len(columns))}) "
            f"ON CONFLICT ({table.key}) DO UPDATE SET {updates}"
        )
        with conn.cursor() as cur:
            cur.executemany(sql, [[row.get(c) for c in columns] for row in table_rows])
        written += len(table_rows)
    return written


def load_into_postgres(dsn: str, data: HospitalData) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        create_source_tables(conn)
        upsert_rows(conn, data.rows)
