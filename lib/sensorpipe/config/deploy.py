"""Settings of `sensorpipe deploy` (conf/deploy.yaml): the EMR cluster and its security."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sensorpipe.config.checks import (
    ConfigError,
    check,
    positive,
    verified_tls_jdbc_url,
)


@dataclass(frozen=True)
class ClusterSettings:
    name: str = "sensorpipe"
    release_label: str = "emr-spark-8.0.0"
    applications: str = "Hadoop,Spark,Hive"  # comma-separated
    primary_instance_type: str = "m7g.xlarge"
    core_instance_type: str = "m7g.xlarge"
    core_instance_count: int = field(default=2, metadata=check(positive))
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
            verified_tls_jdbc_url("metastore.jdbc_url", str(self.jdbc_url))


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
