"""The hospital's source tables: their keys, their DDL (for the local stand-in database) and
the checks a row must pass before it enters the protected zone. One place for all three."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

# ICD-10-CM: a letter (not U), a digit, a digit or A/B, then optionally a dot and 1-4 characters.
ICD10_PATTERN = r"^[A-TV-Z][0-9][0-9AB](\.[0-9A-TV-Z]{1,4})?$"
# Limits no living patient's measurement falls outside: beyond them the row is an error.
VITAL_LIMITS = {
    "heart_rate": (20, 300),
    "systolic_mmhg": (40, 300),
    "diastolic_mmhg": (10, 200),
    "temperature_c": (25.0, 45.0),
    "spo2_pct": (30, 100),
    "respiratory_rate": (2, 80),
}


@dataclass(frozen=True)
class Check:
    """A quarantine reason and what a bad row looks like: `detail` is a string column, null
    when the row passes."""

    reason: str
    detail: Callable[[], Column]


def _null_key(*columns: str) -> Check:
    def detail() -> Column:
        return F.concat_ws(
            ", ", *[F.when(F.col(c).isNull(), F.lit(f"{c} is null")) for c in columns]
        )

    return Check("null_key", lambda: F.nullif(detail(), F.lit("")))


def _invalid_icd10(column: str) -> Check:
    return Check(
        "invalid_icd10",
        lambda: F.when(
            ~F.col(column).rlike(ICD10_PATTERN), F.concat(F.lit(f"{column}="), F.col(column))
        ),
    )


def _impossible_vitals() -> Check:
    def detail() -> Column:
        parts = [
            F.when(
                (F.col(c) < low) | (F.col(c) > high),
                F.concat(
                    F.lit(f"{c}="), F.col(c).cast("string"), F.lit(f" outside [{low}, {high}]")
                ),
            )
            for c, (low, high) in VITAL_LIMITS.items()
        ]
        return F.nullif(F.concat_ws(", ", *parts), F.lit(""))

    return Check("impossible_vital", detail)


NULL_VERSION = "null_updated_at"


def _null_version(column: str) -> Check:
    """A row with no version: an incremental read by `updated_at` would never find it."""
    return Check(NULL_VERSION, lambda: F.when(F.col(column).isNull(), F.lit(f"{column} is null")))


@dataclass(frozen=True)
class SourceTable:
    name: str  # schema.table in the source database
    key: str  # numeric, unique: the JDBC reads split on it, the current view keys on it
    columns: tuple[tuple[str, str], ...]  # (name, PostgreSQL type), key first, updated_at last
    checks: tuple[Check, ...] = ()
    updated_column: str = "updated_at"

    @property
    def all_checks(self) -> tuple[Check, ...]:
        """The table's checks, after the one every table has: a version to read it by."""
        return (_null_version(self.updated_column), *self.checks)

    @property
    def output_name(self) -> str:
        return self.name.split(".", 1)[1]

    def ddl(self) -> str:
        cols = ",\n  ".join(
            f"{n} {t}{' PRIMARY KEY' if n == self.key else ''}" for n, t in self.columns
        )
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n  {cols}\n)"


_TS = "timestamptz"
SOURCE_TABLES: tuple[SourceTable, ...] = (
    SourceTable(
        "clinical.patients",
        "patient_id",
        (
            ("patient_id", "bigint"),
            ("mrn", "text"),
            ("first_name", "text"),
            ("last_name", "text"),
            ("sex", "text"),
            ("birth_date", "date"),
            ("ssn", "text"),
            ("address", "text"),
            ("phone", "text"),
            ("facility_id", "text"),
            ("updated_at", _TS),
        ),
        (_null_key("mrn", "facility_id"),),
    ),
    SourceTable(
        "clinical.encounters",
        "encounter_id",
        (
            ("encounter_id", "bigint"),
            ("patient_id", "bigint"),
            ("facility_id", "text"),
            ("encounter_type", "text"),
            ("admitted_at", _TS),
            ("discharged_at", _TS),
            ("notes", "text"),
            ("updated_at", _TS),
        ),
        (_null_key("patient_id", "admitted_at"),),
    ),
    SourceTable(
        "clinical.diagnoses",
        "diagnosis_id",
        (
            ("diagnosis_id", "bigint"),
            ("encounter_id", "bigint"),
            ("patient_id", "bigint"),
            ("icd10_code", "text"),
            ("diagnosed_at", _TS),
            ("resolved_at", _TS),
            ("updated_at", _TS),
        ),
        (_null_key("encounter_id", "patient_id", "icd10_code"), _invalid_icd10("icd10_code")),
    ),
    SourceTable(
        "clinical.vitals",
        "vital_id",
        (
            ("vital_id", "bigint"),
            ("encounter_id", "bigint"),
            ("patient_id", "bigint"),
            ("measured_at", _TS),
            ("heart_rate", "integer"),
            ("systolic_mmhg", "integer"),
            ("diastolic_mmhg", "integer"),
            ("temperature_c", "numeric(4,1)"),
            ("spo2_pct", "integer"),
            ("respiratory_rate", "integer"),
            ("updated_at", _TS),
        ),
        (_null_key("encounter_id", "patient_id", "measured_at"), _impossible_vitals()),
    ),
    SourceTable(
        "clinical.lab_results",
        "lab_id",
        (
            ("lab_id", "bigint"),
            ("encounter_id", "bigint"),
            ("patient_id", "bigint"),
            ("loinc_code", "text"),
            ("test_name", "text"),
            ("value", "double precision"),
            ("unit", "text"),
            ("ref_low", "double precision"),
            ("ref_high", "double precision"),
            ("collected_at", _TS),
            ("updated_at", _TS),
        ),
        (_null_key("encounter_id", "patient_id", "loinc_code"),),
    ),
    SourceTable(
        "clinical.device_readings",
        "reading_id",
        (
            ("reading_id", "bigint"),
            ("patient_id", "bigint"),
            ("device_id", "text"),
            ("metric", "text"),
            ("value", "double precision"),
            ("measured_at", _TS),
            ("updated_at", _TS),
        ),
        (_null_key("patient_id", "device_id"),),
    ),
    SourceTable(
        "billing.claims",
        "claim_id",
        (
            ("claim_id", "bigint"),
            ("encounter_id", "bigint"),
            ("patient_id", "bigint"),
            ("icd10_code", "text"),
            ("amount", "numeric(10,2)"),
            ("service_date", "date"),
            ("submitted_at", _TS),
            ("updated_at", _TS),
        ),
        (_null_key("encounter_id", "patient_id", "icd10_code"), _invalid_icd10("icd10_code")),
    ),
)
TABLES_BY_NAME = {t.name: t for t in SOURCE_TABLES}
