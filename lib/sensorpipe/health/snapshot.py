"""Patient profile snapshots and the clinical-billing cross-reference, as of a date.

Pure transformations over the protected zone's current rows; `run_snapshot` reads them, writes
the identified outputs to the protected zone and their declared crossings to the general zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from sensorpipe.catalog import register_partition
from sensorpipe.config import HealthSettings
from sensorpipe.health.ingest import (
    LOAD_COLUMN,
    ProtectedLayout,
    read_protected,
)
from sensorpipe.health.tables import TABLES_BY_NAME
from sensorpipe.lineage import LineageRun, schema_fingerprint
from sensorpipe.phi import Tokenizer, cross, token_key, token_key_id, write_general

ABNORMAL_LAB_DAYS = 90
VITALS = ("heart_rate", "systolic_mmhg", "diastolic_mmhg", "temperature_c", "spo2_pct",
          "respiratory_rate")  # fmt: skip


def _before(column: str, cutoff: Column) -> Column:
    return F.col(column) < cutoff


def patient_profiles(
    patients: DataFrame,
    encounters: DataFrame,
    diagnoses: DataFrame,
    vitals: DataFrame,
    labs: DataFrame,
    device_readings: DataFrame,
    device_anomalies: DataFrame | None,
    as_of: date,
) -> DataFrame:
    """One row per patient as known at the end of `as_of` (UTC)."""
    cutoff = F.lit(as_of + timedelta(days=1)).cast("timestamp")
    year_ago = F.lit(as_of + timedelta(days=1) - timedelta(days=365)).cast("timestamp")
    demographics = patients.select(
        "patient_id", "mrn", "first_name", "last_name", "sex", "birth_date",
        F.floor(F.months_between(F.lit(as_of), "birth_date") / 12).cast("int").alias("age_years"),
        "ssn", "address", "phone", "facility_id",
    )  # fmt: skip
    visits = (
        encounters.where(_before("admitted_at", cutoff))
        .groupBy("patient_id")
        .agg(
            F.count("*").alias("encounter_count"),
            F.count(F.when(F.col("admitted_at") >= year_ago, 1)).alias("encounters_last_365d"),
            F.max("admitted_at").alias("last_encounter_at"),
        )
    )
    active = (
        diagnoses.where(
            _before("diagnosed_at", cutoff)
            & (F.col("resolved_at").isNull() | (F.col("resolved_at") >= cutoff))
        )
        .groupBy("patient_id")
        .agg(F.sort_array(F.collect_set("icd10_code")).alias("active_diagnoses"))
    )
    newest = Window.partitionBy("patient_id").orderBy(
        F.col("measured_at").desc(), F.col("vital_id").desc()
    )
    latest_vitals = (
        vitals.where(_before("measured_at", cutoff))
        .withColumn("_n", F.row_number().over(newest))
        .where("_n = 1")
        .select("patient_id", F.col("measured_at").alias("latest_vitals_at"), *VITALS)
    )
    since = F.lit(as_of + timedelta(days=1) - timedelta(days=ABNORMAL_LAB_DAYS)).cast("timestamp")
    lab_fields = ("loinc_code", "test_name", "value", "unit", "ref_low", "ref_high", "collected_at")
    abnormal = (
        labs.where(
            _before("collected_at", cutoff)
            & (F.col("collected_at") >= since)
            & ((F.col("value") < F.col("ref_low")) | (F.col("value") > F.col("ref_high")))
        )
        .groupBy("patient_id")
        .agg(F.sort_array(F.collect_list(F.struct(*lab_fields))).alias("abnormal_labs"))
    )
    profile = (
        demographics.join(visits, "patient_id", "left")
        .join(active, "patient_id", "left")
        .join(latest_vitals, "patient_id", "left")
        .join(abnormal, "patient_id", "left")
        .join(_device_alerts(device_readings, device_anomalies, cutoff), "patient_id", "left")
    )
    return profile.select(
        *[c for c in profile.columns if c not in ("encounter_count", "device_alert_count")],
        F.coalesce("encounter_count", F.lit(0)).alias("encounter_count"),
        F.coalesce("device_alert_count", F.lit(0)).alias("device_alert_count"),
    ).select(*PROFILE_COLUMNS)


PROFILE_COLUMNS = (
    "patient_id", "mrn", "first_name", "last_name", "sex", "birth_date", "age_years", "ssn",
    "address", "phone", "facility_id", "encounter_count", "encounters_last_365d",
    "last_encounter_at", "active_diagnoses", "latest_vitals_at", *VITALS, "abnormal_labs",
    "device_alert_count", "last_device_alert_at", "device_alerts",
)  # fmt: skip


def _device_alerts(
    device_readings: DataFrame, anomalies: DataFrame | None, cutoff: Column
) -> DataFrame:
    """Anomalies the streaming job flagged on devices attached to a patient, up to `cutoff`."""
    fields = ("device_id", "sensor", "event_time", "anomaly_score", "alert_severity")
    if anomalies is None:
        return (
            device_readings.select("patient_id")
            .where("false")
            .select(
                "patient_id",
                F.lit(0).alias("device_alert_count"),
                F.lit(None).cast("timestamp").alias("last_device_alert_at"),
                F.array()
                .cast(
                    "array<struct<device_id:string,sensor:string,event_time:timestamp,"
                    "anomaly_score:double,alert_severity:string>>"
                )
                .alias("device_alerts"),
            )
        )
    attached = device_readings.select("patient_id", "device_id").distinct()
    flagged = anomalies.where(F.col("is_anomaly") & _before("event_time", cutoff)).select(*fields)
    return (
        attached.join(flagged, "device_id")
        .groupBy("patient_id")
        .agg(
            F.count("*").alias("device_alert_count"),
            F.max("event_time").alias("last_device_alert_at"),
            F.sort_array(F.collect_list(F.struct(*fields))).alias("device_alerts"),
        )
    )


DISCREPANCY_COLUMNS = (
    "kind", "patient_id", "encounter_id", "claim_id", "related_claim_id", "icd10_code",
    "service_date", "detail",
)  # fmt: skip


def billing_discrepancies(
    encounters: DataFrame, diagnoses: DataFrame, claims: DataFrame, as_of: date
) -> DataFrame:
    """Clinical record vs billing, for encounters discharged and claims serviced by `as_of`:

    - claim_diagnosis_unsupported: a claim bills a diagnosis its encounter does not record;
    - encounter_without_claim: a discharged encounter with no claim;
    - duplicate_claim: a claim repeating an earlier one (same encounter, code, amount, date).
    """
    cutoff = F.lit(as_of + timedelta(days=1)).cast("timestamp")
    claims = claims.where(F.col("service_date") <= F.lit(as_of))
    discharged = encounters.where(
        F.col("discharged_at").isNotNull() & _before("discharged_at", cutoff)
    )
    recorded = diagnoses.select("encounter_id", "icd10_code").distinct()
    unsupported = claims.join(recorded, ["encounter_id", "icd10_code"], "left_anti").select(
        F.lit("claim_diagnosis_unsupported").alias("kind"),
        "patient_id", "encounter_id", "claim_id",
        F.lit(None).cast("bigint").alias("related_claim_id"), "icd10_code", "service_date",
        F.format_string(
            "claim %d bills %s, which encounter %d does not record",
            "claim_id", "icd10_code", "encounter_id",
        ).alias("detail"),
    )  # fmt: skip
    unbilled = discharged.join(claims, "encounter_id", "left_anti").select(
        F.lit("encounter_without_claim").alias("kind"),
        "patient_id", "encounter_id",
        F.lit(None).cast("bigint").alias("claim_id"),
        F.lit(None).cast("bigint").alias("related_claim_id"),
        F.lit(None).cast("string").alias("icd10_code"),
        F.col("discharged_at").cast("date").alias("service_date"),
        F.format_string("encounter %d discharged, no claim", "encounter_id").alias("detail"),
    )  # fmt: skip
    same = Window.partitionBy("encounter_id", "icd10_code", "amount", "service_date").orderBy(
        "claim_id"
    )
    duplicates = (
        claims.withColumn("related_claim_id", F.first("claim_id").over(same))
        .where(F.col("claim_id") != F.col("related_claim_id"))
        .select(
            F.lit("duplicate_claim").alias("kind"),
            "patient_id", "encounter_id", "claim_id", "related_claim_id", "icd10_code",
            "service_date",
            F.format_string("claim %d repeats %d", "claim_id", "related_claim_id").alias("detail"),
        )
    )  # fmt: skip
    return unsupported.unionByName(unbilled).unionByName(duplicates).select(*DISCREPANCY_COLUMNS)


@dataclass
class SnapshotResult:
    as_of: date
    patients: int
    discrepancies: dict[str, int]
    protected_paths: list[str]
    general_paths: list[str]


def _protected_table(
    spark: SparkSession, settings: HealthSettings, name: str, run: LineageRun
) -> DataFrame:
    table = TABLES_BY_NAME[name]
    layout = ProtectedLayout(settings.protected.root)
    committed = layout.committed(table)
    run.read(
        "path", layout.table_path(table), None, load_id=committed["load_id"],
        high_water_mark=committed["high_water_mark"],
    )  # fmt: skip
    return read_protected(spark, settings, table).drop(LOAD_COLUMN, table.updated_column)


def clinical_alerts(spark: SparkSession, path: str) -> DataFrame:
    """The device stream job's clinical alerts table (its anomalies table, one folder per
    batch). A configured table that is not there fails: a snapshot showing no device alerts
    because the stream job never ran would read as patients without alerts."""
    from pyspark.errors import AnalysisException

    try:
        return spark.read.parquet(path)
    except AnalysisException as exc:
        if exc.getCondition() == "PATH_NOT_FOUND":
            raise FileNotFoundError(
                f"device_anomalies_path: no clinical alerts table at {path} (has the device "
                "stream job, conf/hospital-stream-*.yaml, run?)"
            ) from None
        raise


def run_snapshot(
    spark: SparkSession, settings: HealthSettings, as_of: date, run: LineageRun
) -> SnapshotResult:
    """Build both outputs for `as_of`, replacing that date's partition in each zone."""
    key = token_key(settings.general)  # fails early without a key
    tokenizer, key_id = Tokenizer(key), token_key_id(key)
    tables = {
        name.split(".")[1]: _protected_table(spark, settings, name, run) for name in TABLES_BY_NAME
    }
    anomalies = None
    if settings.device_anomalies_path:
        anomalies = clinical_alerts(spark, settings.device_anomalies_path)
        run.read("path", settings.device_anomalies_path, None)
    profile = patient_profiles(
        tables["patients"], tables["encounters"], tables["diagnoses"], tables["vitals"],
        tables["lab_results"], tables["device_readings"], anomalies, as_of,
    ).persist()  # fmt: skip
    discrepancies = billing_discrepancies(
        tables["encounters"], tables["diagnoses"], tables["claims"], as_of
    ).persist()
    try:
        protected_root = settings.protected.root.rstrip("/")
        result = SnapshotResult(as_of, profile.count(), {}, [], [])
        for row in discrepancies.groupBy("kind").count().collect():
            result.discrepancies[row["kind"]] = row["count"]
        rows = {
            "patient_profile": result.patients,
            "billing_discrepancies": sum(result.discrepancies.values()),
        }
        for name, df in (("patient_profile", profile), ("billing_discrepancies", discrepancies)):
            path = f"{protected_root}/{name}/as_of={as_of}"
            df.write.mode("overwrite").parquet(path)
            result.protected_paths.append(path)
            run.wrote("path", path, rows[name], schema_fingerprint(df), zone="protected")
            general = cross(df, name, tokenizer)
            general_path = write_general(general, settings.general, str(as_of))
            result.general_paths.append(general_path)
            catalog, partition = settings.catalog, {"as_of": as_of.isoformat()}
            register_partition(spark, catalog, catalog.protected_database, name,
                               f"{protected_root}/{name}", df.schema, partition)  # fmt: skip
            general_table = general_path.rsplit("/", 1)[0]
            register_partition(spark, catalog, catalog.database, name, general_table,
                               general.df.schema, partition)  # fmt: skip
            run.wrote(
                "path", general_path, rows[name], schema_fingerprint(general.df), zone="general",
                token_key_id=key_id,
            )  # fmt: skip
    finally:
        profile.unpersist()
        discrepancies.unpersist()
    return result
