"""Typed settings, one module per application, and one loader for all of them.

    settings = load_settings("conf/local.yaml")                    # -> Settings
    health = load_settings("conf/health-local.yaml", kind=HealthSettings)

- `loader`: reading, `${VAR}` interpolation, `SENSORPIPE__SECTION__FIELD` overrides, validation;
- `checks`: the field checks and `ConfigError`;
- `stream`: the streaming job and the lake's batch jobs (`Settings`);
- `hospital`: the hospital's jobs (`HealthSettings`);
- `deploy`: `sensorpipe deploy` (`DeploySettings`).

docs/configuration.md is generated from these classes (tests/test_config_reference.py).
"""

from sensorpipe.config.checks import ConfigError
from sensorpipe.config.deploy import (
    ClusterSettings,
    DeploySettings,
    MetastoreSettings,
    SecuritySettings,
)
from sensorpipe.config.hospital import (
    GeneralZoneSettings,
    HealthSettings,
    JdbcSourceSettings,
    ProtectedZoneSettings,
)
from sensorpipe.config.loader import ENV_PREFIX, load_settings, load_settings_for_job
from sensorpipe.config.stream import (
    AggregateSettings,
    AlertSettings,
    AnomalySettings,
    CatalogSettings,
    DecodeSettings,
    LakeSettings,
    LineageSettings,
    MetricsSettings,
    Settings,
    SourceSettings,
    SparkSettings,
    StreamSettings,
    ViewConfig,
    ViewSettings,
    WarehouseSettings,
)

__all__ = [
    "ENV_PREFIX", "AggregateSettings", "AlertSettings", "AnomalySettings", "CatalogSettings",
    "ClusterSettings",
    "ConfigError", "DecodeSettings", "DeploySettings", "GeneralZoneSettings", "HealthSettings",
    "JdbcSourceSettings", "LakeSettings", "LineageSettings", "MetastoreSettings",
    "MetricsSettings", "ProtectedZoneSettings", "SecuritySettings", "Settings", "SourceSettings",
    "SparkSettings", "StreamSettings", "ViewConfig", "ViewSettings", "WarehouseSettings",
    "load_settings", "load_settings_for_job",
]  # fmt: skip
