"""Settings of the streaming job and the batch jobs around the lake (conf/local.yaml,
conf/emr.yaml)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from sensorpipe.config.checks import (
    SHARED_SCHEMES,
    ConfigError,
    check,
    duration_seconds,
    interval,
    optional_duration,
    optional_positive,
    optional_trigger,
    positive,
    shared_path,
    trigger,
    unit_interval,
    within,
)
from sensorpipe.sensors import catalogue


@dataclass(frozen=True)
class SparkSettings:
    app_name: str
    # local[N] for laptop runs; null on EMR, where YARN or the cluster decides.
    master: str | None = None
    shuffle_partitions: int = field(default=4, metadata=check(positive))
    # Extra Spark properties, applied last (spark.* keys only).
    conf: dict[str, str] = field(default_factory=dict)
    # With a master other than local[N], executors run elsewhere (other hosts, other working
    # folders): a local path is only valid if every process sees the same filesystem there
    # (one machine, or a shared mount). Say so here to allow local paths with such a master.
    local_paths_shared: bool = False


@dataclass(frozen=True)
class SourceSettings:
    # replay: recorded records from files; kinesis: this project's Kinesis source (any
    # endpoint, e.g. kinesalite); aws-kinesis: EMR's connector (its jar on the cluster).
    kind: Literal["replay", "kinesis", "aws-kinesis"]
    stream_name: str
    # Replay: a folder of JSON-lines files of recorded Kinesis records (samples/telemetry).
    replay_path: str = "samples/telemetry"
    max_files_per_trigger: int = field(default=6, metadata=check(positive))
    # Kinesis (both kinds): credentials come from boto3's default chain, never from here.
    region: str = "us-east-1"
    endpoint_url: str | None = None
    starting_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = "LATEST"
    starting_timestamp: str | None = None
    max_fetch_records_per_shard: int = field(default=100000, metadata=check(positive))
    # aws-kinesis: where EMR keeps the connector jar (passed with --jars by the EMR steps).
    connector_jar: str | None = None
    # Further reader options, passed to the source verbatim (e.g. kinesis.consumerType).
    options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.starting_position == "AT_TIMESTAMP" and not self.starting_timestamp:
            raise ConfigError(
                "source.starting_timestamp: required when source.starting_position is AT_TIMESTAMP"
            )
        if self.kind == "aws-kinesis" and not self.endpoint_url:
            # EMR's connector has no default endpoint: it fails at the first fetch without one.
            raise ConfigError(
                "source.endpoint_url: required by the aws-kinesis connector "
                "(kinesis.endpointUrl, e.g. https://kinesis.us-east-1.amazonaws.com)"
            )


@dataclass(frozen=True)
class DecodeSettings:
    max_record_bytes: int = field(default=8192, metadata=check(positive))
    # Event time may trail arrival by this much (trains buffer readings in tunnels and depots)...
    max_event_lag_hours: int = field(default=168, metadata=check(positive))
    # ...and lead it by this much (device clocks drift a little, not by days).
    max_event_lead_minutes: int = field(default=5, metadata=check(positive))
    # The sensor catalogue (sensors.py) the records are validated against: train; hospital
    # (bedside monitors and pacemakers).
    catalogue: Literal["train", "hospital"] = "train"


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
    # Each device's moments judged jointly (anomaly.joint_sensors), partitioned by moment_date.
    joint_path: str | None = None
    # How long the file sink's log lists a committed file ("30d"; Spark's `retention` option of
    # the events sink only: the quarantine is not compacted, so its log must keep listing every
    # file, or readers would lose its old days). Without it the log lists every file for ever
    # and each compaction of it, and each micro-batch of the side queries, reads all of them.
    # Days older than this are read from the compacted table, so it must outlast the
    # compaction's delay (required on EMR: at least the late-data horizon plus a week to re-run
    # a compaction).
    sink_log_retention: str | None = field(default=None, metadata=check(optional_duration))
    # Where the readings are protected health information (the hospital: a device serial
    # identifies its patient): every path of the run, its checkpoints (the scorer's state
    # is keyed by device) included, must lie under this root, the protected zone.
    protected_root: str | None = None


@dataclass(frozen=True)
class AnomalySettings:
    # contextual (default: best NAB score, about 150 KB a key; it also judges a sustained
    # change and a departure from the series' own period), compact (the same forest without
    # those, about 140 KB), likelihood (the published design, 1.9 MB a key) or rcf (AWS's
    # Random Cut Forest, as KDA ran it); docs/anomaly-detection.md.
    detector: Literal["contextual", "compact", "likelihood", "rcf"] = "contextual"
    # Trees of the detector's forest; null: the detector's own (contextual and compact 6,
    # likelihood 40, rcf 100).
    # Memory and scoring time per key grow with them (docs/sizing.md), score noise falls. A
    # key keeps the forest it started with; new keys get the new size.
    forest_trees: int | None = field(default=None, metadata=check(optional_positive))
    # is_anomaly = anomaly_score >= threshold (scores are in [0, 1]).
    threshold: float = field(default=0.5, metadata=check(unit_interval))
    # A key's first points only teach its detector: nothing is flagged before this many.
    warmup_points: int = field(default=400, metadata=check(positive))
    # A key silent this long (by its readings' arrival times) loses its detector state (bounded
    # state for retired sensors).
    state_ttl_hours: int = field(default=168, metadata=check(positive))
    # An incident closes at the first point this long after its last anomalous point.
    incident_quiet_minutes: int = field(default=30, metadata=check(positive))
    # Keys are scored in this many buckets (a hash of the key), each one state record and one
    # Spark group per micro-batch. Fixed for a checkpoint's life: a new value needs a new one.
    state_buckets: int = field(default=64, metadata=check(positive))
    # A key's detector is snapshotted into the state every this many points (staggered over
    # the keys); in between, the state holds the values scored since, replayed on a restore.
    snapshot_every_points: int = field(default=2000, metadata=check(positive))
    # Detectors an executor keeps between micro-batches, in shared memory (MB; 0.14 MB a key
    # with the default detector, 2.0 MB with likelihood): a key beyond it is restored from its
    # snapshot when next scored; 0 restores every key each time. Counts against the
    # executor's memory overhead.
    resident_mb: int = 8192
    # Where (a tmpfs folder every Python worker of the executor sees); /dev/shm if null.
    resident_dir: str | None = None
    # The most keys (device, sensor) with detector state in the job (spread evenly over the
    # buckets): points of a key beyond it land in the lake unscored and are counted
    # (unscored_readings), so a producer inventing keys cannot grow the state without bound.
    max_live_keys: int = field(default=200_000, metadata=check(positive))
    # Each device's sensors judged together as well (anomaly/joint.py, docs/anomaly-detection
    # .md): these sensors of the decode catalogue, in a fixed order (a key's state depends on
    # it); empty: off. The moments judged go to lake.joint_path.
    joint_sensors: list[str] = field(default_factory=list)
    # A moment: this many seconds of event time (each sensor's mean reading in it), judged
    # once the device's newest reading is joint_hold_seconds past its end.
    joint_moment_seconds: int = field(default=60, metadata=check(positive))
    joint_hold_seconds: int = field(default=120, metadata=check(positive))


@dataclass(frozen=True)
class AlertSettings:
    # none; outbox: a shadow document per train in `outbox_path` (local runs); iot: the AWS
    # IoT device shadow of the thing named like the train (device_id); table: incidents to
    # the anomalies table only (lake.anomalies_path; the hospital's clinical alerts table,
    # read by its clinical systems), delivered to no device.
    kind: Literal["none", "outbox", "iot", "table"] = "none"
    outbox_path: str = "build/outbox"
    # iot: the account's data endpoint (https://<id>-ats.iot.<region>.amazonaws.com).
    endpoint_url: str | None = None
    region: str = "us-east-1"
    shadow_name: str | None = None  # a named shadow; the classic shadow if null
    # Closed alerts stay on the shadow this long (event time) after the newest alert, then
    # are removed: a shadow that only grew would pass the document size limit (8 KB for a
    # classic shadow's state), after which every update fails.
    closed_retention_hours: int = field(default=24, metadata=check(positive))

    @property
    def delivers(self) -> bool:
        """Incidents go to each device's shadow (not only to the anomalies table)."""
        return self.kind in ("outbox", "iot")


@dataclass(frozen=True)
class AggregateSettings:
    window: str = field(default="1 minute", metadata=check(interval))
    # Tunnels delay readings by up to ~15 minutes; state of windows older than this is dropped.
    watermark: str = field(default="30 minutes", metadata=check(interval))
    percentile_accuracy: int = field(default=10000, metadata=check(positive))
    # Lake files per micro-batch of the aggregates query (it reads the scored events table).
    max_files_per_trigger: int = field(default=200, metadata=check(positive))


@dataclass(frozen=True)
class WarehouseSettings:
    # none: no warehouse query; postgres: psycopg (locally, or any PostgreSQL);
    # redshift: the Redshift Data API with Parquet staged in S3.
    kind: Literal["none", "postgres", "redshift"] = "none"
    host: str = "127.0.0.1"
    port: int = field(default=5432, metadata=check(positive))
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


@dataclass(frozen=True)
class StreamSettings:
    trigger: str = field(default="available_now", metadata=check(trigger))
    # Continuous runs: the quarantine and aggregates queries' trigger, and the alerts query's
    # when the fast path delivers (nobody waits on them, and on few cores they slow the
    # scoring query); the trigger above if null.
    side_trigger: str | None = field(default=None, metadata=check(optional_trigger))
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
class CatalogSettings:
    # hive: every job registers the tables it writes (database, table, location, schema, and
    # partitions as they commit) through Spark's Hive support, which on EMR is the Glue Data
    # Catalog or the external metastore (spark-hive-site), locally a PostgreSQL-backed
    # metastore named by $SPARK_CONF_DIR/hive-site.xml. none: paths only.
    kind: Literal["none", "hive"] = "none"
    database: str = "sensorpipe"  # the lake and the general zone
    protected_database: str = "sensorpipe_phi"  # the hospital's protected zone

    def __post_init__(self) -> None:
        for name in ("database", "protected_database"):
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,127}", getattr(self, name)):
                raise ConfigError(f"catalog.{name}: lower-case letters, digits and _ only")
        if self.database == self.protected_database:
            raise ConfigError("catalog.protected_database: must differ from catalog.database")


@dataclass(frozen=True)
class ViewSettings:
    # `sensorpipe view`, the operations page: it reads the warehouse's incidents and windows
    # with its own read-only login and serves them on this address (loopback unless told).
    host: str = "127.0.0.1"
    port: int = field(default=8765, metadata=check(positive))
    # PostgreSQL: the read-only login (SELECT on the warehouse's tables, nothing else) and the
    # environment variable holding its password. Redshift: through the Data API as the
    # caller's own IAM identity (an engineer's federated role) unless db_user is set.
    user: str = "sensorpipe_view"
    password_env: str | None = None
    db_user: str | None = None
    # How often the page's server asks the warehouse whether a load committed.
    poll_seconds: float = field(default=0.25, metadata=check(positive))
    # A train that has sent nothing for this long, while the fleet has, is shown silent.
    silent_after_minutes: int = field(default=5, metadata=check(positive))


@dataclass(frozen=True)
class ViewConfig:
    """What `sensorpipe view` reads of a configuration file: its warehouse and view blocks (a
    job's file, whose other blocks it ignores, or one with only these two)."""

    warehouse: WarehouseSettings
    view: ViewSettings = field(default_factory=ViewSettings)


# A compaction that failed can be re-run for this long before its day leaves the sink log.
COMPACTION_RERUN_DAYS = 7


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
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    view: ViewSettings = field(default_factory=ViewSettings)

    def __post_init__(self) -> None:
        if self.alerts.kind != "none" and not self.lake.anomalies_path:
            raise ConfigError("lake.anomalies_path: required when alerts.kind is not none")
        if self.anomaly.joint_sensors:
            self._check_joint()
        if self.decode.catalogue == "hospital" or self.lake.protected_root:
            self._check_protected_zone()
        if self.environment == "emr":
            shared_path("lineage.path", self.lineage.path)
            self._check_sink_log_retention()
        if self.distributed and self.source.kind == "kinesis":
            self._check_source_metadata_is_shared()
        if (
            self.environment == "emr"
            and self.warehouse.kind == "postgres"
            and self.warehouse.sslmode != "verify-full"
        ):
            raise ConfigError(
                "warehouse.sslmode: on EMR the warehouse connection must require verified TLS "
                f"(verify-full), got {self.warehouse.sslmode!r}"
            )

    @property
    def distributed(self) -> bool:
        """Executors are processes of their own (YARN, a standalone master), not the driver's
        (local runs default to local[2], as session.py builds them)."""
        master = self.spark.master or ("local[2]" if self.environment == "local" else "")
        return not master.startswith("local")

    def _check_source_metadata_is_shared(self) -> None:
        """The Kinesis source's tasks write where they stopped under the checkpoint root, and
        the driver reads it back: a folder only the driver's machine has loses the end files
        (and a relative one is each executor's own working folder)."""
        root = self.lake.checkpoint_root
        if root.startswith(SHARED_SCHEMES):
            return
        master = self.spark.master or "YARN"
        if not self.spark.local_paths_shared:
            raise ConfigError(
                f"lake.checkpoint_root: {root!r} is a local path, and with master {master} the "
                "Kinesis source's executors write its metadata there: use s3://, or set "
                "spark.local_paths_shared: true if every process shares that filesystem"
            )

    def _check_joint(self) -> None:
        sensors, known = self.anomaly.joint_sensors, catalogue(self.decode.catalogue)
        unknown = [name for name in sensors if name not in known]
        if unknown:
            raise ConfigError(
                f"anomaly.joint_sensors: {', '.join(unknown)} not in the "
                f"{self.decode.catalogue} catalogue ({', '.join(known)})"
            )
        if len(set(sensors)) < 2 or len(set(sensors)) != len(sensors):
            raise ConfigError("anomaly.joint_sensors: at least two sensors, each once")
        if not self.lake.joint_path:
            raise ConfigError("lake.joint_path: required when anomaly.joint_sensors is set")

    def _check_protected_zone(self) -> None:
        """Hospital readings stay in the protected zone: the lake's tables, checkpoints and
        resident detectors under lake.protected_root, nothing to the warehouse, no device
        shadows."""
        root = self.lake.protected_root
        if not root:
            raise ConfigError("lake.protected_root: required with decode.catalogue hospital "
                              "(device readings are protected health information)")  # fmt: skip
        for name in ("events_path", "quarantine_path", "checkpoint_root", "anomalies_path",
                     "compacted_path", "joint_path"):  # fmt: skip
            path = getattr(self.lake, name)
            if path is not None and not within(path, root, strictly=True):
                raise ConfigError(f"lake.{name}: {path!r} is outside the protected zone "
                                  f"(lake.protected_root {root!r})")  # fmt: skip
        if not within(self.lineage.path, root, strictly=True):
            raise ConfigError(
                f"lineage.path: {self.lineage.path!r} is outside the protected zone (lake."
                f"protected_root {root!r}): a device run's lineage names its tables and counts"
            )
        anomaly = self.anomaly
        if anomaly.resident_mb > 0 and not (
            anomaly.resident_dir and not anomaly.resident_dir.startswith(SHARED_SCHEMES)
            and within(anomaly.resident_dir, root, strictly=True)
        ):  # fmt: skip
            raise ConfigError(
                f"anomaly.resident_dir: {anomaly.resident_dir!r} is outside the protected zone: "
                "resident detectors hold a device's readings under its serial; set it to a "
                f"local folder inside lake.protected_root ({root!r}), or anomaly.resident_mb: 0 "
                "(every key restored from the checkpoint, which is inside the zone)"
            )
        if self.warehouse.kind != "none":
            raise ConfigError("warehouse.kind: must be none for protected readings (the "
                              "warehouse is outside the protected zone)")  # fmt: skip
        if self.alerts.delivers:
            raise ConfigError(f"alerts.kind: {self.alerts.kind} sends incidents to device "
                              "shadows, outside the protected zone; use table")  # fmt: skip

    @property
    def lake_database(self) -> str:
        """The catalog database the run's tables are registered in: the protected zone's for
        protected readings."""
        protected = self.lake.protected_root is not None
        return self.catalog.protected_database if protected else self.catalog.database

    def _check_sink_log_retention(self) -> None:
        name = "lake.sink_log_retention"
        if self.lake.format != "parquet":
            return  # Delta keeps its own log (and checkpoints it)
        if self.lake.sink_log_retention is None:
            raise ConfigError(f"{name}: required on EMR (e.g. '30d'): without it the sink's log "
                              "lists every file the stream ever wrote")  # fmt: skip
        needed = (self.decode.max_event_lag_hours + 24) * 3600 + COMPACTION_RERUN_DAYS * 86400
        if duration_seconds(name, self.lake.sink_log_retention) < needed:
            raise ConfigError(
                f"{name}: at least {needed // 3600} hours (a day's late-data horizon, "
                f"decode.max_event_lag_hours={self.decode.max_event_lag_hours}, plus "
                f"{COMPACTION_RERUN_DAYS} days to compact it), got "
                f"{self.lake.sink_log_retention!r}"
            )
        if not self.lake.compacted_path:
            raise ConfigError("lake.compacted_path: required with lake.sink_log_retention "
                              "(older days are read from the compacted table)")  # fmt: skip
