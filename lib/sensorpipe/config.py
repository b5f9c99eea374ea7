"""Typed settings from conf/<env>.yaml plus environment overrides, validated once at start-up.

    settings = load_settings("conf/local.yaml")

Values may reference the environment as ``${NAME}`` or ``${NAME:-default}`` (bucket names,
endpoints): an unset reference without a default is an error naming the field. A single field
can be overridden with ``SENSORPIPE__<SECTION>__<FIELD>`` (for example
``SENSORPIPE__LAKE__FORMAT=delta``); the value is read as a YAML scalar. Every error names the
field, what was expected and what arrived. Secrets never live here: they come from the
environment or Secrets Manager where they are used.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ENV_PREFIX = "SENSORPIPE__"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PROCESSING_TIME = re.compile(r"^\d+(\.\d+)?\s*(second|seconds|minute|minutes|ms|milliseconds)$")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the field."""


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name}: expected a positive integer, got {value}")


def _trigger(name: str, value: str) -> None:
    if value != "available_now" and not _PROCESSING_TIME.match(value):
        raise ConfigError(
            f"{name}: expected 'available_now' or a processing-time interval such as "
            f"'10 seconds', got {value!r}"
        )


def _check(validator: typing.Callable[[str, Any], None]) -> dict[str, Any]:
    return {"check": validator}


@dataclass(frozen=True)
class SparkSettings:
    app_name: str
    # local[N] for laptop runs; null on EMR, where YARN or the cluster decides.
    master: str | None = None
    shuffle_partitions: int = field(default=4, metadata=_check(_positive))
    # Extra Spark properties, applied last (spark.* keys only).
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceSettings:
    # replay: recorded records from files; kinesis: this project's Kinesis source (any
    # endpoint, e.g. kinesalite); aws-kinesis: EMR's connector (its jar on the cluster).
    kind: Literal["replay", "kinesis", "aws-kinesis"]
    stream_name: str
    # Replay: a folder of JSON-lines files of recorded Kinesis records (samples/telemetry).
    replay_path: str = "samples/telemetry"
    max_files_per_trigger: int = field(default=6, metadata=_check(_positive))
    # Kinesis (both kinds): credentials come from boto3's default chain, never from here.
    region: str = "us-east-1"
    endpoint_url: str | None = None
    starting_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = "LATEST"
    starting_timestamp: str | None = None
    max_fetch_records_per_shard: int = field(default=100000, metadata=_check(_positive))
    # aws-kinesis: where EMR keeps the connector jar (passed with --jars by the EMR steps).
    connector_jar: str | None = None
    # Further reader options, passed to the source verbatim (e.g. kinesis.consumerType).
    options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.starting_position == "AT_TIMESTAMP" and not self.starting_timestamp:
            raise ConfigError(
                "source.starting_timestamp: required when source.starting_position is AT_TIMESTAMP"
            )


@dataclass(frozen=True)
class DecodeSettings:
    max_record_bytes: int = field(default=8192, metadata=_check(_positive))
    # Event time may trail arrival by this much (trains buffer readings in tunnels and depots)...
    max_event_lag_hours: int = field(default=168, metadata=_check(_positive))
    # ...and lead it by this much (device clocks drift a little, not by days).
    max_event_lead_minutes: int = field(default=5, metadata=_check(_positive))


@dataclass(frozen=True)
class LakeSettings:
    format: Literal["parquet", "delta"]
    events_path: str
    quarantine_path: str
    checkpoint_root: str
    # Every anomalous event and incident transition, as sent to the trains (alerts on).
    anomalies_path: str | None = None
    # The events table rewritten one file per (day, hour) by jobs/compact_lake.py.
    compacted_path: str | None = None


def _unit_interval(name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{name}: expected a number in (0, 1], got {value}")


@dataclass(frozen=True)
class AnomalySettings:
    # likelihood (default: best NAB score) or rcf (AWS's Random Cut Forest, as KDA ran it).
    detector: Literal["likelihood", "rcf"] = "likelihood"
    # is_anomaly = anomaly_score >= threshold (scores are in [0, 1]).
    threshold: float = field(default=0.5, metadata=_check(_unit_interval))
    # A key's first points only teach its detector: nothing is flagged before this many.
    warmup_points: int = field(default=400, metadata=_check(_positive))
    # A key silent this long loses its detector state (bounded state for retired sensors).
    state_ttl_hours: int = field(default=168, metadata=_check(_positive))
    # An incident closes at the first point this long after its last anomalous point.
    incident_quiet_minutes: int = field(default=30, metadata=_check(_positive))


@dataclass(frozen=True)
class AlertSettings:
    # none; outbox: a shadow document per train in `outbox_path` (local runs); iot: the AWS
    # IoT device shadow of the thing named like the train (device_id).
    kind: Literal["none", "outbox", "iot"] = "none"
    outbox_path: str = "build/outbox"
    # iot: the account's data endpoint (https://<id>-ats.iot.<region>.amazonaws.com).
    endpoint_url: str | None = None
    region: str = "us-east-1"
    shadow_name: str | None = None  # a named shadow; the classic shadow if null


def _interval(name: str, value: str) -> None:
    if not _INTERVAL.match(value):
        raise ConfigError(f"{name}: expected an interval such as '1 minute', got {value!r}")


_INTERVAL = re.compile(r"^\d+\s*(second|seconds|minute|minutes|hour|hours|day|days)$")


@dataclass(frozen=True)
class AggregateSettings:
    window: str = field(default="1 minute", metadata=_check(_interval))
    # Tunnels delay readings by up to ~15 minutes; state of windows older than this is dropped.
    watermark: str = field(default="30 minutes", metadata=_check(_interval))
    percentile_accuracy: int = field(default=10000, metadata=_check(_positive))
    # Lake files per micro-batch of the aggregates query (it reads the scored events table).
    max_files_per_trigger: int = field(default=200, metadata=_check(_positive))


@dataclass(frozen=True)
class WarehouseSettings:
    # none: no warehouse query; postgres: psycopg (locally, or any PostgreSQL);
    # redshift: the Redshift Data API with Parquet staged in S3.
    kind: Literal["none", "postgres", "redshift"] = "none"
    host: str = "127.0.0.1"
    port: int = field(default=5432, metadata=_check(_positive))
    database: str = "warehouse"
    user: str = "sensorpipe"
    # The name of the environment variable holding the password (never the password).
    password_env: str | None = None
    sslmode: Literal["disable", "prefer", "require", "verify-full"] = "prefer"
    region: str = "us-east-1"
    workgroup_name: str | None = None
    cluster_identifier: str | None = None
    secret_arn: str | None = None
    db_user: str | None = None
    iam_role: str | None = None
    staging_uri: str | None = None

    def __post_init__(self) -> None:
        if self.kind != "redshift":
            return
        if not (self.workgroup_name or self.cluster_identifier):
            raise ConfigError(
                "warehouse.workgroup_name: required (or warehouse."
                "cluster_identifier) when warehouse.kind is redshift"
            )
        for name in ("iam_role", "staging_uri"):
            if not getattr(self, name):
                raise ConfigError(f"warehouse.{name}: required when warehouse.kind is redshift")
        if not str(self.staging_uri).startswith("s3://"):
            raise ConfigError(
                f"warehouse.staging_uri: expected an s3:// URI, got {self.staging_uri!r}"
            )


def _optional_trigger(name: str, value: str | None) -> None:
    if value is not None:
        _trigger(name, value)


@dataclass(frozen=True)
class StreamSettings:
    trigger: str = field(default="available_now", metadata=_check(_trigger))
    # Continuous runs: the quarantine and aggregates queries' trigger (nobody waits on them, and
    # on few cores they slow the scoring query); the trigger above if null.
    side_trigger: str | None = field(default=None, metadata=_check(_optional_trigger))
    query_prefix: str = "sensorpipe"


@dataclass(frozen=True)
class MetricsSettings:
    # none locally; cloudwatch on EMR: the metrics the estate's alarms watch (WarehouseLoadFailures,
    # LakeCommitLagSeconds) in this namespace (infra/estate.yaml's metrics_namespace).
    kind: Literal["none", "cloudwatch"] = "none"
    namespace: str = "sensorpipe"
    region: str = "us-east-1"
    endpoint_url: str | None = None


@dataclass(frozen=True)
class LineageSettings:
    # One JSON document per job run (a table: spark.read.json(path)); local folder or s3://.
    path: str = "build/lineage"


@dataclass(frozen=True)
class Settings:
    environment: Literal["local", "emr"]
    spark: SparkSettings
    source: SourceSettings
    lake: LakeSettings
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    anomaly: AnomalySettings = field(default_factory=AnomalySettings)
    aggregates: AggregateSettings = field(default_factory=AggregateSettings)
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    lineage: LineageSettings = field(default_factory=LineageSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    def __post_init__(self) -> None:
        if self.alerts.kind != "none" and not self.lake.anomalies_path:
            raise ConfigError("lake.anomalies_path: required when alerts.kind is not none")


# -- the hospital's jobs (conf/health-*.yaml): JDBC ingest and patient snapshots ------------


@dataclass(frozen=True)
class JdbcSourceSettings:
    # The on-premises database, e.g. jdbc:postgresql://host:5432/hospital.
    url: str
    user: str
    # The name of the environment variable holding the password, or a Secrets Manager id.
    password_env: str | None = None
    password_secret_id: str | None = None
    driver: str = "org.postgresql.Driver"
    # Parallel reads per table (split on the table's numeric key).
    num_partitions: int = field(default=4, metadata=_check(_positive))
    fetch_size: int = field(default=10000, metadata=_check(_positive))


@dataclass(frozen=True)
class ProtectedZoneSettings:
    # Identifiers live here and nowhere else: imported tables, quarantine, high-water marks,
    # the identified patient snapshot and discrepancies.
    root: str


@dataclass(frozen=True)
class GeneralZoneSettings:
    # De-identified outputs only, written through the declared crossings in phi.py.
    root: str
    # Where the HMAC key for tokens comes from: an environment variable's name, or a Secrets
    # Manager secret id (never the key itself).
    token_key_env: str | None = "SENSORPIPE_PHI_TOKEN_KEY"
    token_key_secret_id: str | None = None
    # Dates about a person crossing the boundary are truncated to this (birth dates always
    # become a year).
    generalise_dates: Literal["none", "month", "year"] = "month"

    def __post_init__(self) -> None:
        if not (self.token_key_env or self.token_key_secret_id):
            raise ConfigError(
                "general.token_key_env: required (or general.token_key_secret_id): "
                "tokens need a key"
            )


@dataclass(frozen=True)
class HealthSettings:
    environment: Literal["local", "emr"]
    spark: SparkSettings
    source: JdbcSourceSettings
    protected: ProtectedZoneSettings
    general: GeneralZoneSettings
    lineage: LineageSettings = field(default_factory=LineageSettings)
    # The streaming job's anomalies table (device alerts in the patient snapshot).
    device_anomalies_path: str | None = None

    def __post_init__(self) -> None:
        protected = self.protected.root.rstrip("/") + "/"
        general = self.general.root.rstrip("/") + "/"
        if protected.startswith(general) or general.startswith(protected):
            raise ConfigError(
                f"general.root: must not overlap protected.root ({self.general.root!r} vs "
                f"{self.protected.root!r}): the zones are separate locations"
            )


# -- deploying to EMR (conf/deploy.yaml): `sensorpipe deploy` ---------------------------------


@dataclass(frozen=True)
class ClusterSettings:
    name: str = "sensorpipe"
    release_label: str = "emr-spark-8.0.0"
    applications: str = "Hadoop,Spark,Hive"  # comma-separated
    primary_instance_type: str = "m7g.xlarge"
    core_instance_type: str = "m7g.xlarge"
    core_instance_count: int = field(default=2, metadata=_check(_positive))
    ec2_subnet_id: str | None = None
    ec2_key_name: str | None = None
    service_role: str = "EMR_DefaultRole"
    instance_profile: str = "EMR_EC2_DefaultRole"
    security_configuration: str = "sensorpipe-kerberos-ranger-tls"
    # The cluster-dedicated KDC's realm, and where its passwords come from (env var names).
    kerberos_realm: str = "SENSORPIPE.INTERNAL"
    kdc_admin_password_env: str = "SENSORPIPE_KDC_ADMIN_PASSWORD"
    cross_realm_trust_password_env: str = "SENSORPIPE_CROSS_REALM_TRUST_PASSWORD"
    # The jobs' service principal (sensorpipe/<primary node's FQDN>@realm) and its keytab.
    jobs_principal: str = "sensorpipe"
    jobs_keytab: str = "/etc/security/keytabs/sensorpipe.keytab"


@dataclass(frozen=True)
class SecuritySettings:
    kms_key_arn: str
    tls_certificates_uri: str  # s3://.../certs.zip with the PEM files EMR expects
    trusted_realm: str  # the corporate realm the cluster realm trusts
    trusted_domain: str
    trusted_kdc: str
    trusted_admin_server: str
    ranger_admin_url: str
    ranger_admin_secret_arn: str
    ranger_plugin_role_arn: str
    ranger_other_services_role_arn: str
    ranger_spark_client_secret_arn: str
    ranger_hive_client_secret_arn: str
    ranger_audit_log_group_arn: str


@dataclass(frozen=True)
class MetastoreSettings:
    # glue: the Glue Data Catalog; jdbc: an external metastore database (RDS).
    kind: Literal["glue", "jdbc"] = "glue"
    jdbc_url: str | None = None
    user: str | None = None
    password_secret_id: str | None = None  # Secrets Manager; read on the node, never logged

    def __post_init__(self) -> None:
        if self.kind == "jdbc":
            for name in ("jdbc_url", "user", "password_secret_id"):
                if not getattr(self, name):
                    raise ConfigError(f"metastore.{name}: required when metastore.kind is jdbc")


@dataclass(frozen=True)
class DeploySettings:
    region: str
    bucket: str  # artifacts, logs, the lake, the general zone
    protected_bucket: str  # the hospital's protected zone
    log_uri: str
    cluster: ClusterSettings
    security: SecuritySettings
    metastore: MetastoreSettings = field(default_factory=MetastoreSettings)
    artifacts_prefix: str = "sensorpipe/artifacts"
    # Uploaded with the artifacts and shipped to the JDBC steps with --jars.
    jdbc_driver_jar: str = "/usr/share/java/postgresql.jar"
    # Environment of every step's driver (conf/emr.yaml's ${...} references).
    step_environment: dict[str, str] = field(default_factory=dict)


def load_settings(
    path: str | Path, environ: Mapping[str, str] | None = None, kind: type = Settings
) -> Any:
    """Read, interpolate, override and validate one configuration file (as `kind`)."""
    environ = os.environ if environ is None else environ
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {path}: expected a mapping at the top level")
    _apply_overrides(raw, environ)
    return _build(kind, raw, "", environ)


def load_settings_for_job(path: str | Path, kind: type = Settings) -> Any:
    """`load_settings` for a job's main(): a configuration error ends the process at start-up
    with exit code 2 and a message naming the field."""
    try:
        return load_settings(path, kind=kind)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _apply_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for key, text in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {'.'.join(parts[:-1])} is not a section")
        node[parts[-1]] = yaml.safe_load(text) if text != "" else None


def _build(cls: type, raw: Any, prefix: str, environ: Mapping[str, str]) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'configuration'}: expected a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown field (expected one of {', '.join(sorted(known))})"
        )
    values = {}
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{name}: required field is missing")
            continue
        value = _coerce(hints[f.name], raw[f.name], name, environ)
        if "check" in f.metadata:
            f.metadata["check"](name, value)
        values[f.name] = value
    return cls(**values)


def _coerce(tp: Any, value: Any, name: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        value = _interpolate(value, name, environ)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, f"{name}.", environ)
    if origin in (typing.Union, types.UnionType):
        if (value is None or value == "") and type(None) in args:
            return None  # an optional field set to "" (e.g. ${VAR:-}) is unset
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, name, environ)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{name}: expected one of {choices}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {type(value).__name__}")
        (inner,) = args
        return [_coerce(inner, v, f"{name}[{i}]", environ) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping, got {type(value).__name__}")
        return {str(k): _scalar_text(v, f"{name}.{k}", environ) for k, v in value.items()}
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        return float(value)
    if tp is str:
        if value is None or isinstance(value, (dict, list)) or str(value).strip() == "":
            raise ConfigError(f"{name}: expected a non-empty string, got {value!r}")
        return str(value)
    raise TypeError(f"{name}: unsupported settings type {tp!r}")  # a bug in this module


def _scalar_text(value: Any, name: str, environ: Mapping[str, str]) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise ConfigError(f"{name}: expected a scalar, got {value!r}")
    if isinstance(value, bool):
        return "true" if value else "false"
    return _interpolate(str(value), name, environ)


def _interpolate(text: str, name: str, environ: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        if var in environ and environ[var] != "":
            return environ[var]
        if default is not None:
            return default
        raise ConfigError(f"{name}: refers to ${{{var}}}, which is not set in the environment")

    return _ENV_REF.sub(replace, text)
