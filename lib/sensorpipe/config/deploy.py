"""Settings of `sensorpipe deploy` (conf/deploy.yaml): the EMR clusters and their security.

What a release offers is taken from its release page, not assumed: `RELEASE_APPLICATIONS` is
the "Amazon EMR 8.0.0 - emr-spark-8.0.0" application list (GA 2026-05-21), and a request for
an application the release does not have fails at start-up, naming it. Likewise for access
control: EMR's Ranger integration ends at release 7.3 (Management Guide, "Integrate Amazon EMR
with Apache Ranger": not supported from 7.4 on), so `security.authorization: ranger` is refused
for later releases; the jobs run with runtime roles (AddJobFlowSteps `ExecutionRoleArn`,
"Runtime roles for Amazon EMR steps") and readers get Lake Formation ("Enable Lake Formation
with Amazon EMR"). docs/emr.md has the table of who enforces what.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from sensorpipe.config.checks import (
    ConfigError,
    check,
    positive,
    verified_tls_jdbc_url,
)

# Applications per release label, from each release's page in the Amazon EMR Release Guide.
RELEASE_APPLICATIONS: dict[str, frozenset[str]] = {
    "emr-spark-8.0.0": frozenset(
        {"AmazonCloudWatchAgent", "Delta", "Hudi", "Iceberg", "JupyterEnterpriseGateway",
         "Livy", "Spark"}
    ),
}  # fmt: skip

# Graviton instance families have a "g" right after the generation digit (m7g, m7gd, c7gn,
# r8g, im4gn, x2gd, g5g): arm64. The other families EMR offers (m7i, m7a, r7iz, g4dn) are x86_64.
_INSTANCE_TYPE = re.compile(r"^([a-z]+)(\d+)([a-z-]*)\.[a-z0-9]+$")


def instance_architecture(instance_type: str) -> str:
    """ "arm64" or "x86_64" for an EC2 instance type such as m7g.xlarge or m7i.xlarge."""
    match = _INSTANCE_TYPE.match(instance_type)
    if not match:
        raise ConfigError(f"{instance_type!r} is not an EC2 instance type")
    return "arm64" if match.group(3).startswith("g") else "x86_64"


def _release(name: str, value: str) -> None:
    if value not in RELEASE_APPLICATIONS:
        raise ConfigError(
            f"{name}: {value} is not a release this deployment knows; add its applications from "
            f"its release page to RELEASE_APPLICATIONS (known: {sorted(RELEASE_APPLICATIONS)})"
        )


# EMR's Ranger integration is documented up to release 7.3 (Management Guide, "Integrate Amazon
# EMR with Apache Ranger": "not supported ... from Amazon EMR release 7.4 onwards").
RANGER_LAST_RELEASE = (7, 3)
_RELEASE_VERSION = re.compile(r"^emr-(?:[a-z]+-)?(\d+)\.(\d+)\.\d+$")
_REGION = re.compile(r"^[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


def release_version(label: str) -> tuple[int, int]:
    """(major, minor) of a release label such as emr-7.3.0 or emr-spark-8.0.0."""
    match = _RELEASE_VERSION.match(label)
    if not match:
        raise ConfigError(f"cluster.release_label: {label!r} is not an EMR release label")
    return int(match.group(1)), int(match.group(2))


def _region(name: str, value: str) -> None:
    if not _REGION.match(value or ""):
        raise ConfigError(
            f"{name}: an AWS region such as eu-west-1 is required, got {value!r}; the plan takes "
            "every endpoint, jar and ARN from this one region (set AWS_REGION)"
        )


def _role_arn(name: str, value: str) -> None:
    if not _ROLE_ARN.match(value or ""):
        raise ConfigError(
            f"{name}: an IAM role ARN (arn:aws:iam::<account>:role/...) is required, got "
            f"{value!r}; the estate's access stack outputs it"
        )


def _security_group(name: str, value: str) -> None:
    if not re.fullmatch(r"sg-[0-9a-f]{4,17}", value or ""):
        raise ConfigError(
            f"{name}: a security group id (sg-...) of the estate's network is required, got "
            f"{value!r}; without it EMR makes its own and the warehouse's rules never match"
        )


def _subnet(name: str, value: str) -> None:
    if not re.fullmatch(r"subnet-[0-9a-f]{4,17}", value or ""):
        raise ConfigError(
            f"{name}: a private subnet id (subnet-...) is required, got {value!r}; without one "
            "EMR launches into the default VPC's public subnets"
        )


@dataclass(frozen=True)
class ClusterSettings:
    ec2_subnet_id: str = field(metadata=check(_subnet))  # a private subnet (infra/ network)
    # The estate's EMR security groups (infra/ network): EmrManagedMasterSecurityGroup,
    # EmrManagedSlaveSecurityGroup and ServiceAccessSecurityGroup of RunJobFlow; the
    # warehouse, the metastore and the VPC endpoints admit these groups by id.
    primary_security_group: str = field(metadata=check(_security_group))
    core_security_group: str = field(metadata=check(_security_group))
    service_access_security_group: str = field(metadata=check(_security_group))
    # Further groups of the estate's (infra/ network): the path on premises, the hospital
    # database and the corporate KDCs for every node, the cluster KDC from the corporate
    # network for the primary node.
    additional_primary_security_groups: list[str] = field(default_factory=list)
    additional_core_security_groups: list[str] = field(default_factory=list)
    name: str = "sensorpipe"  # the clusters are <name>-stream and <name>-batch
    release_label: str = field(default="emr-spark-8.0.0", metadata=check(_release))
    # Comma-separated; each must be one of the release's applications. Spark runs the jobs;
    # Delta backs the delta-defaults classification.
    applications: str = "Spark,Delta"
    # The dependency archive is built for one architecture (dist/BUILD-INFO.json); the
    # instances must match it. x86_64 by default; see docs/emr.md for an arm64 build.
    primary_instance_type: str = "m7i.xlarge"
    core_instance_type: str = "m7i.xlarge"
    core_instance_count: int = field(default=2, metadata=check(positive))
    ec2_key_name: str | None = None
    service_role: str = "EMR_DefaultRole"
    instance_profile: str = "EMR_EC2_DefaultRole"
    # The security configuration is named <prefix>-<hash of its content>: an edited
    # configuration is created anew and used (EMR's are immutable).
    security_configuration_prefix: str = "sensorpipe"
    # The cluster-dedicated KDC's realm, and where its passwords come from (env var names).
    kerberos_realm: str = "SENSORPIPE.INTERNAL"
    kdc_admin_password_env: str = "SENSORPIPE_KDC_ADMIN_PASSWORD"
    cross_realm_trust_password_env: str = "SENSORPIPE_CROSS_REALM_TRUST_PASSWORD"
    # The jobs' one principal (<jobs_principal>@<realm>), in the keytab and in the steps; the
    # keytab step makes it readable by the step user (EMR runs steps as hadoop).
    jobs_principal: str = "sensorpipe"
    jobs_keytab: str = "/etc/security/keytabs/sensorpipe.keytab"
    step_user: str = "hadoop"
    # The batch cluster: managed scaling between these core unit counts, and termination
    # after this long without a step.
    batch_min_capacity: int = field(default=2, metadata=check(positive))
    batch_max_capacity: int = field(default=8, metadata=check(positive))
    batch_idle_timeout_seconds: int = field(default=3600, metadata=check(positive))
    # The batch steps of day D compact day D - compaction_delay_days: a day is compacted only
    # after its late-data horizon (end of day + decode.max_event_lag_hours, 168 h by default),
    # so at least 1 + that many days.
    compaction_delay_days: int = field(default=8, metadata=check(positive))
    # Install the sensorpipe wheel into each node's Python at boot. Off: the jobs' Python
    # comes with the dependency archive; on, pip needs a reachable index (a private
    # subnet has none unless SENSORPIPE_PIP_ARGS names a mirror).
    install_wheel_on_nodes: bool = False

    def __post_init__(self) -> None:
        offered = RELEASE_APPLICATIONS[self.release_label]
        for app in self.application_names:
            if app not in offered:
                raise ConfigError(
                    f"cluster.applications: {app} is not an application of {self.release_label} "
                    f"(its release page lists {', '.join(sorted(offered))})"
                )
        if "Spark" not in self.application_names:
            raise ConfigError("cluster.applications: Spark is required (every job is Spark)")
        for name in ("primary_instance_type", "core_instance_type"):
            try:
                instance_architecture(getattr(self, name))
            except ConfigError as exc:
                raise ConfigError(f"cluster.{name}: {exc}") from None
        if instance_architecture(self.primary_instance_type) != instance_architecture(
            self.core_instance_type
        ):
            raise ConfigError(
                "cluster.core_instance_type: primary and core instances must share an "
                "architecture (one dependency archive serves both)"
            )
        for name in ("additional_primary_security_groups", "additional_core_security_groups"):
            for i, group in enumerate(getattr(self, name)):
                _security_group(f"cluster.{name}[{i}]", group)
        if self.batch_max_capacity < self.batch_min_capacity:
            raise ConfigError("cluster.batch_max_capacity: below batch_min_capacity")

    @property
    def application_names(self) -> list[str]:
        return [a.strip() for a in self.applications.split(",") if a.strip()]

    @property
    def architecture(self) -> str:
        return instance_architecture(self.core_instance_type)


@dataclass(frozen=True)
class SecuritySettings:
    kms_key_arn: str
    tls_certificates_uri: str  # s3://.../certs.zip with the PEM files EMR expects
    trusted_realm: str  # the corporate realm the cluster realm trusts
    trusted_domain: str
    trusted_kdc: str
    trusted_admin_server: str
    kerberos: Literal["cluster-dedicated-kdc", "none"] = "cluster-dedicated-kdc"
    # Every job step runs with its family's runtime role in both modes (application-scoped IAM
    # roles with source identity propagation). lake-formation: the batch cluster's security
    # configuration also enables Lake Formation's fine-grained access for the readers of its
    # tables; never on the stream clusters, because Lake Formation's fine-grained access does
    # not cover Spark streaming or custom data sources (the job's Kinesis source is one).
    # ranger: EMR's Ranger integration, refused from release 7.4 on (RANGER_LAST_RELEASE).
    authorization: Literal["lake-formation", "runtime-roles", "ranger"] = "lake-formation"


@dataclass(frozen=True)
class RuntimeRoleSettings:
    """The runtime role of each job family (the estate's access stack): every step of that
    family is submitted with it (AddJobFlowSteps ExecutionRoleArn)."""

    streaming: str = field(metadata=check(_role_arn))  # the train stream
    batch: str = field(metadata=check(_role_arn))  # rollup, manifest, S3DistCp, compaction
    hospital: str = field(metadata=check(_role_arn))  # ingest, snapshot, the device stream


@dataclass(frozen=True)
class MetastoreSettings:
    # glue: the Glue Data Catalog; jdbc: an external metastore database (RDS), its password
    # given to EMR as a Secrets Manager ARN (the EMR.secret@ annotation: EMR fetches it when it
    # configures the nodes; DescribeCluster never shows it).
    kind: Literal["glue", "jdbc"] = "glue"
    jdbc_url: str | None = None
    user: str | None = None
    password_secret_arn: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "jdbc":
            for name in ("jdbc_url", "user", "password_secret_arn"):
                if not getattr(self, name):
                    raise ConfigError(f"metastore.{name}: required when metastore.kind is jdbc")
            verified_tls_jdbc_url("metastore.jdbc_url", str(self.jdbc_url))
            if not str(self.password_secret_arn).startswith("arn:aws:secretsmanager:"):
                raise ConfigError(
                    "metastore.password_secret_arn: a Secrets Manager secret ARN "
                    "(arn:aws:secretsmanager:...) is required: EMR resolves only ARNs"
                )


@dataclass(frozen=True)
class DeploySettings:
    # The one region of a plan (the deploy's AWS_REGION): the clusters, the steps' AWS_REGION,
    # script-runner's bucket, and every ARN and endpoint the plan holds (checked).
    region: str = field(metadata=check(_region))
    bucket: str  # artifacts, logs, the lake, the general zone
    protected_bucket: str  # the hospital's protected zone
    log_uri: str
    cluster: ClusterSettings
    security: SecuritySettings
    runtime_roles: RuntimeRoleSettings
    metastore: MetastoreSettings = field(default_factory=MetastoreSettings)
    artifacts_prefix: str = "sensorpipe/artifacts"
    # Uploaded with the artifacts and shipped to the JDBC steps with --jars.
    jdbc_driver_jar: str = "/usr/share/java/postgresql.jar"
    # Environment of every step's driver (conf/emr.yaml's ${...} references).
    step_environment: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.security.authorization == "ranger" and (
            release_version(self.cluster.release_label) > RANGER_LAST_RELEASE
        ):
            raise ConfigError(
                f"security.authorization: ranger is not supported on {self.cluster.release_label}: "
                "Amazon EMR does not support its Ranger integration from release 7.4 on "
                '(Amazon EMR Management Guide, "Integrate Amazon EMR with Apache Ranger"); use '
                "lake-formation (readers) with runtime roles (jobs), docs/emr.md"
            )
