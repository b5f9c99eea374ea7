"""The PHI boundary between the protected zone and the general zone.

The protected zone (config `protected.root`) holds identifiers. The general zone (config
`general.root`) holds what crossed the boundary, and only through a declared crossing:

    frame = cross(profile, "patient_profile", tokenizer)
    write_general(frame, settings.general, as_of=date)

A crossing (CROSSINGS below) has a rule for every column of its protected input: keep it, drop
it, replace it by a keyed token (HMAC-SHA256 with a key from the environment or Secrets
Manager), reduce a date to its year, reduce a birth date to its year unless the person is 90 or
older, cap an age at 90.

The general zone is HIPAA Safe Harbor (45 CFR 164.514(b)(2)) by construction, not by setting:
names, addresses, phone numbers, SSNs, record and account numbers, device identifiers and free
text are dropped; the identifiers the analyses join on are keyed tokens; every date element but
the year is removed (dates become January 1st of their year); ages over 89 become 90 and the
birth year of such a person is removed, since it would give the age away. The table in
docs/hospital.md maps each identifier class to its rule. An input column with
no rule, or a rule for a column that is not there, stops the job: a schema change must be
decided here, in review, not leak silently. `write_general` accepts only what `cross` built.
Free text has no rule but `drop`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, StructType

from sensorpipe.config import GeneralZoneSettings
from sensorpipe.secrets import secret_value

MIN_KEY_BYTES = 32
AGE_CAP = 90  # HIPAA Safe Harbor: ages over 89 are reported as 90 or older


class BoundaryError(ValueError):
    """Something tried to cross the PHI boundary other than through a declared crossing."""


@dataclass(frozen=True)
class Rule:
    kind: Literal["keep", "drop", "token", "date", "birth_year", "age", "array"]
    domain: str | None = None  # token: what the value identifies (patient, claim, ...)
    rename: str | None = None
    fields: Mapping[str, Rule] = field(default_factory=dict)  # array of structs: per field


KEEP, DROP, DATE = Rule("keep"), Rule("drop"), Rule("date")


def token(domain: str, rename: str | None = None) -> Rule:
    return Rule("token", domain=domain, rename=rename)


def birth_year(rename: str, age_column: str = "age_years") -> Rule:
    """The year of a birth date, or null for a person aged 90 or more (by `age_column`)."""
    return Rule("birth_year", domain=age_column, rename=rename)


def array_of(**fields: Rule) -> Rule:
    return Rule("array", fields=fields)


@dataclass(frozen=True)
class Crossing:
    name: str  # the general zone's table
    rules: Mapping[str, Rule]


CROSSINGS: dict[str, Crossing] = {
    c.name: c
    for c in (
        Crossing(
            "patient_profile",
            {
                "patient_id": token("patient", "patient_token"),
                "mrn": DROP,
                "first_name": DROP,
                "last_name": DROP,
                "ssn": DROP,
                "address": DROP,
                "phone": DROP,
                "birth_date": birth_year("birth_year"),
                "age_years": Rule("age"),
                "sex": KEEP,
                "facility_id": KEEP,
                "encounter_count": KEEP,
                "encounters_last_365d": KEEP,
                "last_encounter_at": DATE,
                "active_diagnoses": KEEP,
                "latest_vitals_at": DATE,
                "heart_rate": KEEP,
                "systolic_mmhg": KEEP,
                "diastolic_mmhg": KEEP,
                "temperature_c": KEEP,
                "spo2_pct": KEEP,
                "respiratory_rate": KEEP,
                "abnormal_labs": array_of(
                    loinc_code=KEEP,
                    test_name=KEEP,
                    value=KEEP,
                    unit=KEEP,
                    ref_low=KEEP,
                    ref_high=KEEP,
                    collected_at=DATE,
                ),
                "device_alert_count": KEEP,
                "last_device_alert_at": DATE,
                # Device serial numbers are identifiers too.
                "device_alerts": array_of(
                    device_id=DROP,
                    sensor=KEEP,
                    event_time=DATE,
                    anomaly_score=KEEP,
                    alert_severity=KEEP,
                ),
            },
        ),
        Crossing(
            "billing_discrepancies",
            {
                "kind": KEEP,
                "patient_id": token("patient", "patient_token"),
                "encounter_id": token("encounter", "encounter_token"),
                "claim_id": token("claim", "claim_token"),
                "related_claim_id": token("claim", "related_claim_token"),
                "icd10_code": KEEP,
                "service_date": DATE,
                "detail": DROP,  # text quoting record numbers
            },
        ),
    )
}


def token_key(settings: GeneralZoneSettings) -> bytes:
    """The token key's bytes. The key is hex (as `sensorpipe phi-key` writes it) and at least
    MIN_KEY_BYTES once decoded: counting the hex text's characters would take a 16-byte key
    written as 32 hex digits for a 32-byte one."""
    text = secret_value(
        "general.token_key_env", settings.token_key_env, settings.token_key_secret_id
    )
    try:
        key = bytes.fromhex((text or "").strip())
    except ValueError:
        raise BoundaryError(
            "general.token_key_env: the token key must be hex (`sensorpipe phi-key` makes one)"
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise BoundaryError(
            f"general.token_key_env: the token key must be at least {MIN_KEY_BYTES} bytes "
            f"({2 * MIN_KEY_BYTES} hex digits), got {len(key)}"
        )
    return key


def token_key_id(key: bytes) -> str:
    """A public name for a key (a hash of it, not the key): recorded with every general-zone
    output, so a rotation shows which tokens came from which key."""
    return hashlib.sha256(b"sensorpipe token key id|" + key).hexdigest()[:12]


def token_of(key: bytes, domain: str, value: object) -> str:
    """The token for one value (what the Spark column computes, for lookups and tests)."""
    return hmac.new(key, f"{domain}|{value}".encode(), hashlib.sha256).hexdigest()


class Tokenizer:
    """Keyed tokens as a Spark column. A Python UDF, so the key travels pickled inside the
    task and never appears in a query plan, the Spark UI or the event log."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def column(self, value: Column, domain: str) -> Column:
        key = self._key

        @pandas_udf("string")
        def hmac_token(values: pd.Series) -> pd.Series:
            return values.map(lambda v: None if v is None else token_of(key, domain, v))

        return hmac_token(value.cast("string"))


@dataclass(frozen=True)
class GeneralFrame:
    """A DataFrame that crossed the boundary through a declared crossing."""

    name: str
    df: DataFrame


def _year_only(value: Column) -> Column:
    """A date or time about a person, reduced to its year (as January 1st of that year)."""
    return F.trunc(value.cast("date"), "year")


def _apply(rule: Rule, value: Column, dtype: object, where: str, tokenizer: Tokenizer) -> Column:
    if rule.kind == "keep":
        return value
    if rule.kind == "token":
        return tokenizer.column(value, rule.domain or "value")
    if rule.kind == "date":
        return _year_only(value)
    if rule.kind == "birth_year":
        # The age column is the protected input's, so the cap is applied before any rename.
        return F.when(F.col(rule.domain or "age_years") < AGE_CAP, F.year(value))
    if rule.kind == "age":
        return F.least(value, F.lit(AGE_CAP))
    if rule.kind == "array":
        if not (isinstance(dtype, ArrayType) and isinstance(dtype.elementType, StructType)):
            raise BoundaryError(f"{where}: an array rule needs an array of structs, got {dtype}")
        element = dtype.elementType
        _check_rules(rule.fields, element.fieldNames(), where)

        def each(x: Column) -> Column:
            return F.struct(
                *[
                    _apply(r, x[f.name], f.dataType, f"{where}.{f.name}", tokenizer).alias(
                        r.rename or f.name
                    )
                    for f in element.fields
                    for r in [rule.fields[f.name]]
                    if r.kind != "drop"
                ]
            )

        return F.transform(value, each)
    raise BoundaryError(f"{where}: unknown rule {rule.kind!r}")


def _check_rules(rules: Mapping[str, Rule], columns: list[str], where: str) -> None:
    undeclared = [c for c in columns if c not in rules]
    if undeclared:
        raise BoundaryError(
            f"{where}: no crossing rule for column(s) {', '.join(undeclared)}; declare keep, "
            "drop, token or a generalisation in phi.CROSSINGS"
        )
    missing = sorted(set(rules) - set(columns))
    if missing:
        raise BoundaryError(f"{where}: rules for absent column(s) {', '.join(missing)}")


def cross(df: DataFrame, crossing_name: str, tokenizer: Tokenizer) -> GeneralFrame:
    """The general-zone version of a protected DataFrame, by a declared crossing."""
    crossing = CROSSINGS.get(crossing_name)
    if crossing is None:
        raise BoundaryError(f"{crossing_name!r} is not a declared crossing (phi.CROSSINGS)")
    _check_rules(crossing.rules, df.columns, crossing_name)
    columns = [
        _apply(rule, F.col(f.name), f.dataType, f"{crossing_name}.{f.name}", tokenizer).alias(
            rule.rename or f.name
        )
        for f in df.schema.fields
        for rule in [crossing.rules[f.name]]
        if rule.kind != "drop"
    ]
    return GeneralFrame(crossing.name, df.select(*columns))


def write_general(frame: GeneralFrame, settings: GeneralZoneSettings, as_of: str) -> str:
    """Write a crossed frame to `<general.root>/<name>/as_of=<date>` (replacing that date)."""
    if not isinstance(frame, GeneralFrame) or frame.name not in CROSSINGS:
        raise BoundaryError("only frames built by phi.cross may be written to the general zone")
    path = f"{settings.root.rstrip('/')}/{frame.name}/as_of={as_of}"
    frame.df.write.mode("overwrite").parquet(path)
    return path
