"""The estate's settings: one YAML file (infra/estate.yaml), read and validated by the same
loader as conf/ (`sensorpipe.config.load_settings`): unknown or missing fields, wrong types and
unset ``${VAR}`` references fail before anything is synthesised, naming the field."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sensorpipe.config import ConfigError, load_settings
from sensorpipe.config.checks import check, positive

_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,20}$")


def _account(name: str, value: str) -> None:
    if not _ACCOUNT.match(value):
        raise ConfigError(f"{name}: expected a 12-digit AWS account id, got {value!r}")


def _region(name: str, value: str) -> None:
    if not _REGION.match(value):
        raise ConfigError(f"{name}: expected an AWS region such as eu-west-1, got {value!r}")


def _cidr(name: str, value: str) -> None:
    try:
        ipaddress.ip_network(value)
    except ValueError:
        raise ConfigError(
            f"{name}: expected a CIDR block such as 10.0.0.0/8, got {value!r}"
        ) from None


def _port(name: str, value: int) -> None:
    # Redshift's default port 5439 is what scanners try first: the estate refuses it.
    if not 5431 <= value <= 5455 and not 8191 <= value <= 8215:
        raise ConfigError(
            f"{name}: Redshift Serverless accepts 5431-5455 or 8191-8215, got {value}"
        )
    if value == 5439:
        raise ConfigError(f"{name}: choose a port other than Redshift's default 5439")


def _prefix_list(name: str, value: str) -> None:
    if not re.fullmatch(r"pl-[0-9a-f]{8,17}", value):
        raise ConfigError(f"{name}: expected a prefix list id (pl-...), got {value!r}")


def _ipv4(name: str, value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ConfigError(f"{name}: expected an IPv4 address, got {value!r}") from None


@dataclass(frozen=True)
class OnPremisesSettings:
    """How the estate reaches the corporate and hospital networks (docs/estate.md lists what
    the corporate side provides). direct-connect: a virtual private gateway the network team
    associates with its Direct Connect gateway (the seed's path for engineers to Redshift);
    vpn: a Site-to-Site VPN from that gateway to the corporate customer gateway;
    transit-gateway: an attachment to the corporate transit gateway shared with this account
    (where Direct Connect and VPNs usually land in a larger network)."""

    kind: Literal["direct-connect", "vpn", "transit-gateway"] = "direct-connect"
    # Routed from the private subnets to the corporate side; none may overlap the VPC.
    cidrs: list[str] = field(default_factory=lambda: ["10.0.0.0/12"])
    transit_gateway_id: str | None = None  # transit-gateway: tgw-...
    customer_gateway_ip: str | None = None  # vpn: the corporate VPN device's public address
    customer_gateway_asn: int = field(default=65000, metadata=check(positive))
    amazon_side_asn: int = field(default=64512, metadata=check(positive))
    # DNS: the corporate domain's names (the hospital database, the KDCs) are forwarded by a
    # Route 53 Resolver outbound endpoint to these corporate DNS servers.
    dns_domain: str = "corp.example.com"
    dns_servers: list[str] = field(default_factory=lambda: ["10.1.0.10", "10.1.0.11"])
    # What the jobs reach there: the hospital's database (the JDBC import) and the corporate
    # KDCs (the cross-realm trust: the cluster and corporate KDCs reach each other).
    hospital_db_cidr: str = field(default="10.2.0.0/24", metadata=check(_cidr))
    hospital_db_port: int = field(default=5432, metadata=check(positive))
    kdc_cidr: str = field(default="10.1.0.0/24", metadata=check(_cidr))

    def __post_init__(self) -> None:
        for i, cidr in enumerate(self.cidrs):
            _cidr(f"network.on_premises.cidrs[{i}]", cidr)
        for i, server in enumerate(self.dns_servers):
            _ipv4(f"network.on_premises.dns_servers[{i}]", server)
        if len(self.dns_servers) < 2:
            raise ConfigError("network.on_premises.dns_servers: two or more, for availability")
        if self.kind == "transit-gateway" and not re.fullmatch(
            r"tgw-[0-9a-f]{8,17}", self.transit_gateway_id or ""
        ):
            raise ConfigError(
                "network.on_premises.transit_gateway_id: a transit gateway id (tgw-...) is "
                "required when kind is transit-gateway"
            )
        if self.kind == "vpn":
            _ipv4("network.on_premises.customer_gateway_ip", self.customer_gateway_ip or "")
        corporate = [ipaddress.ip_network(c) for c in self.cidrs]
        for name in ("hospital_db_cidr", "kdc_cidr"):
            net = ipaddress.ip_network(getattr(self, name))
            if not any(net.subnet_of(c) for c in corporate):
                raise ConfigError(
                    f"network.on_premises.{name}: {net} is not inside the routed corporate "
                    f"ranges {self.cidrs}"
                )


@dataclass(frozen=True)
class NetworkSettings:
    vpc_cidr: str = field(metadata=check(_cidr))
    # Explicit zones: synthesis needs no AWS credentials and the templates are reproducible.
    # Three, because Redshift Serverless wants subnets in three Availability Zones.
    availability_zones: list[str] = field(default_factory=list)
    # The corporate network (Direct Connect or VPN): the only address range besides the EMR
    # cluster's security groups that may reach the warehouse.
    corporate_cidr: str = field(default="10.0.0.0/12", metadata=check(_cidr))
    flow_log_retention_days: int = field(default=365, metadata=check(positive))
    # The region's AWS-managed S3 prefix list (com.amazonaws.<region>.s3; `aws ec2
    # describe-managed-prefix-lists`): the warehouse's COPY reaches S3 through the gateway
    # endpoint at these addresses.
    s3_prefix_list_id: str = field(default="pl-6da54004", metadata=check(_prefix_list))
    on_premises: OnPremisesSettings = field(default_factory=OnPremisesSettings)

    def __post_init__(self) -> None:
        vpc = ipaddress.ip_network(self.vpc_cidr)
        for cidr in (self.corporate_cidr, *self.on_premises.cidrs):
            if vpc.overlaps(ipaddress.ip_network(cidr)):
                raise ConfigError(
                    f"network.on_premises.cidrs: {cidr} overlaps the VPC's {vpc}: the private "
                    "route tables cannot route it to the corporate side"
                )


@dataclass(frozen=True)
class StorageSettings:
    infrequent_access_after_days: int = field(default=30, metadata=check(positive))
    glacier_after_days: int = field(default=180, metadata=check(positive))
    noncurrent_versions_expire_after_days: int = field(default=90, metadata=check(positive))
    incomplete_uploads_expire_after_days: int = field(default=7, metadata=check(positive))
    access_logs_expire_after_days: int = field(default=400, metadata=check(positive))
    trail_logs_expire_after_days: int = field(default=2557, metadata=check(positive))


@dataclass(frozen=True)
class StreamSettings:
    telemetry_stream: str = "train-telemetry"
    telemetry_shards: int = field(default=4, metadata=check(positive))
    hospital_stream: str = "hospital-devices"
    hospital_shards: int = field(default=1, metadata=check(positive))
    retention_hours: int = field(default=168, metadata=check(positive))
    # Trains publish each reading on trains/<thing name>/telemetry.
    train_topic_prefix: str = "trains"
    # Who may assume the hospital proxy's role (the trusted proxy's own IAM role, or an IAM
    # Roles Anywhere profile's role on premises).
    hospital_proxy_principal_arn: str = "arn:aws:iam::123456789012:role/hospital-proxy"


@dataclass(frozen=True)
class GovernanceSettings:
    """Lake Formation: who reads what in the catalog. The readers' roles are the corporate
    federated roles (engineers, data scientists and analysts read the lake and the general
    zone; clinicians read the protected zone only through the data cells filters of
    conf/lakeformation/data-cells-filters.json, which name their roles)."""

    engineers_role_arn: str = "arn:aws:iam::123456789012:role/engineers"
    data_scientists_role_arn: str = "arn:aws:iam::123456789012:role/data-scientists"
    analysts_role_arn: str = "arn:aws:iam::123456789012:role/analysts"
    # Lake Formation administrators (DataLakeSettings); the deploying role must be one.
    admin_role_arns: list[str] = field(
        default_factory=lambda: ["arn:aws:iam::123456789012:role/lakeformation-admin"]
    )


@dataclass(frozen=True)
class WarehouseSettings:
    database: str = "telemetry"
    port: int = field(default=5440, metadata=check(_port))
    base_capacity: int = field(default=8, metadata=check(positive))
    admin_username: str = "sensorpipe_admin"
    # Engineers sign in through the corporate identity provider, federated into IAM with SAML;
    # the role it grants may only ask Redshift Serverless for temporary database credentials.
    saml_provider_arn: str = "arn:aws:iam::123456789012:saml-provider/corporate-idp"
    # The hospital's on-premises database, for the ingest job (reached over Direct Connect).
    hospital_jdbc_url: str = (
        "jdbc:postgresql://clinical-db.hospital.example:5432/clinical?sslmode=verify-full"
    )


@dataclass(frozen=True)
class ReportingSettings:
    # QuickSight must sit in the warehouse's region (asserted when the app is built).
    region: str = field(metadata=check(_region))
    # The QuickSight user or group that owns the data source and dataset.
    owner_arn: str = "arn:aws:quicksight:eu-west-1:123456789012:group/default/engineers"


@dataclass(frozen=True)
class MonitoringSettings:
    # Alarms: consumer lag (GetRecords.IteratorAgeMilliseconds), lake commit lag (seconds since
    # the events table last committed, published by the streaming job).
    iterator_age_alarm_ms: int = field(default=120_000, metadata=check(positive))
    lake_commit_lag_alarm_seconds: int = field(default=900, metadata=check(positive))
    alarm_email: str | None = None
    # The streaming jobs, as their metrics name them (dimension Job: each configuration's
    # stream.query_prefix, conf/emr.yaml and conf/hospital-stream-emr.yaml): an alarm each.
    stream_jobs: list[str] = field(default_factory=lambda: ["sensorpipe", "sensorpipe_hospital"])
    # Redshift Serverless (AWS/Redshift-Serverless): connections near the workgroup's limit,
    # slow statements (the loads' MERGE among them), storage growing past the plan.
    warehouse_connections_alarm: int = field(default=400, metadata=check(positive))
    warehouse_query_seconds_alarm: int = field(default=300, metadata=check(positive))
    warehouse_storage_alarm_gb: int = field(default=1024, metadata=check(positive))


@dataclass(frozen=True)
class EstateSettings:
    name: str
    account: str = field(metadata=check(_account))
    region: str = field(metadata=check(_region))
    dr_region: str = field(metadata=check(_region))
    network: NetworkSettings
    reporting: ReportingSettings
    storage: StorageSettings = field(default_factory=StorageSettings)
    streams: StreamSettings = field(default_factory=StreamSettings)
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    governance: GovernanceSettings = field(default_factory=GovernanceSettings)
    # CloudWatch namespace of the jobs' own metrics (conf/emr.yaml's metrics.namespace).
    metrics_namespace: str = "sensorpipe"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"name: expected 2-21 lowercase letters, digits or '-', got {self.name!r}"
            )
        if self.dr_region == self.region:
            raise ConfigError(
                f"dr_region: must differ from region ({self.region}) for disaster recovery"
            )
        if self.reporting.region != self.region:
            raise ConfigError(
                f"reporting.region: QuickSight must be in the warehouse's region {self.region}, "
                f"got {self.reporting.region}"
            )
        zones = self.network.availability_zones
        if (
            len(zones) != 3
            or len(set(zones)) != 3
            or any(not z.startswith(self.region) for z in zones)
        ):
            raise ConfigError(
                f"network.availability_zones: expected three distinct zones of {self.region}, "
                f"got {zones}"
            )

    def bucket_name(self, role: str, region: str | None = None) -> str:
        """Globally unique, predictable bucket names, so the DR region's buckets can be named
        by the primary region's replication rules without a cross-region lookup."""
        return f"{self.name}-{role}-{self.account}-{region or self.region}"


def load_estate(path: str | Path) -> EstateSettings:
    return load_settings(path, kind=EstateSettings)
