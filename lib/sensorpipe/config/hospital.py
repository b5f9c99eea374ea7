"""Settings of the hospital's jobs (conf/health-*.yaml): JDBC ingest and patient snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sensorpipe.config.checks import (
    ConfigError,
    check,
    positive,
    shared_path,
    verified_tls_jdbc_url,
    within,
)
from sensorpipe.config.stream import CatalogSettings, LineageSettings, SparkSettings


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
    num_partitions: int = field(default=4, metadata=check(positive))
    fetch_size: int = field(default=10000, metadata=check(positive))
    # Each import re-reads rows versioned up to this long before the last high-water mark: a
    # transaction that commits after a read with an older updated_at is found next time (it
    # must commit within this window). Rows already imported (same key and version) are
    # skipped. At least the source's longest transaction.
    overlap_minutes: int = field(default=60, metadata=check(positive))


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
    # No setting generalises less: dates about a person always cross as their year only
    # (HIPAA Safe Harbor, phi.py).

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
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    # The clinical alerts table the hospital's streaming job writes (its lake.anomalies_path;
    # the device alerts of the patient snapshot). Under protected.root: it holds device
    # serials, which identify patients.
    device_anomalies_path: str | None = None

    def __post_init__(self) -> None:
        if self.environment == "emr":
            verified_tls_jdbc_url("source.url", self.source.url)
            shared_path("lineage.path", self.lineage.path)
        protected, general = self.protected.root, self.general.root
        if within(protected, general) or within(general, protected):
            raise ConfigError(
                f"general.root: must not overlap protected.root ({self.general.root!r} vs "
                f"{self.protected.root!r}): the zones are separate locations"
            )
        alerts = self.device_anomalies_path
        if alerts is not None and not within(alerts, protected):
            raise ConfigError(
                f"device_anomalies_path: {alerts!r} is outside protected.root "
                f"({self.protected.root!r}): the clinical alerts table holds device serials"
            )
