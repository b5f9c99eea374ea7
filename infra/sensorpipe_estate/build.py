"""The app: the estate's stacks in deployment order, each in its region."""

from __future__ import annotations

from pathlib import Path

import yaml
from aws_cdk import App, CfnResource, Environment, Stack, Tags

from sensorpipe_estate.access import AccessStack
from sensorpipe_estate.common import Names
from sensorpipe_estate.dr import DisasterRecoveryStack
from sensorpipe_estate.governance import GovernanceFiltersStack, GovernanceStack
from sensorpipe_estate.monitoring import MonitoringStack
from sensorpipe_estate.network import NetworkStack
from sensorpipe_estate.settings import EstateSettings
from sensorpipe_estate.storage import KeysStorageStack
from sensorpipe_estate.streams_iot import StreamsIotStack
from sensorpipe_estate.warehouse import WarehouseReportingStack

STACK_ORDER = (
    "access",
    "dr",
    "keys-storage",
    "network",
    "streams-iot",
    "warehouse-reporting",
    "monitoring",
    "governance",
    # After the first batch day: the filters need the tables the jobs create.
    "governance-filters",
)


def build_app(settings: EstateSettings, outdir: str | None = None) -> App:
    # Access logs are delivered under a bucket policy, not an ACL (buckets keep ACLs disabled).
    context = {"@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True}
    app = App(outdir=outdir, context=context) if outdir else App(context=context)
    here = Environment(account=settings.account, region=settings.region)
    there = Environment(account=settings.account, region=settings.dr_region)
    n = settings.name

    access = AccessStack(
        app,
        f"{n}-access",
        settings,
        env=here,
        description="sensorpipe: IAM roles (EMR, runtime roles, producers, replication)",
    )
    dr = DisasterRecoveryStack(
        app,
        f"{n}-dr",
        settings,
        env=there,
        description="sensorpipe: disaster recovery replicas and keys",
    )
    dr.add_stack_dependency(access)
    storage = KeysStorageStack(
        app,
        f"{n}-keys-storage",
        settings,
        env=here,
        description="sensorpipe: KMS keys, lake and protected buckets, CloudTrail",
    )
    storage.add_stack_dependency(dr)
    storage.add_stack_dependency(access)
    network = NetworkStack(
        app,
        f"{n}-network",
        settings,
        storage.ops_key,
        env=here,
        description="sensorpipe: private VPC, endpoints, EMR security groups",
    )
    streams = StreamsIotStack(
        app,
        f"{n}-streams-iot",
        settings,
        storage.stream_key,
        storage.protected_key,
        storage.ops_key,
        env=here,
        description="sensorpipe: encrypted streams, IoT rule and policy",
    )
    streams.add_stack_dependency(access)
    warehouse = WarehouseReportingStack(
        app,
        f"{n}-warehouse-reporting",
        settings,
        network.vpc,
        [network.emr_primary_sg, network.emr_core_sg],
        storage.warehouse_key,
        env=here,
        description="sensorpipe: Redshift Serverless and QuickSight",
    )
    warehouse.add_stack_dependency(access)
    MonitoringStack(
        app,
        f"{n}-monitoring",
        settings,
        storage.ops_key,
        [streams.telemetry, streams.hospital],
        streams.rule_name,
        Names(settings).workgroup,
        Names(settings).namespace,
        env=here,
        description="sensorpipe: alarms to an SNS topic",
    )
    governance = GovernanceStack(
        app,
        f"{n}-governance",
        settings,
        env=here,
        description="sensorpipe: Lake Formation locations, databases and grants",
    )
    governance.add_stack_dependency(storage)
    filters = GovernanceFiltersStack(
        app,
        f"{n}-governance-filters",
        settings,
        env=here,
        description="sensorpipe: Lake Formation data cells filters (after the first batch day)",
    )
    filters.add_stack_dependency(governance)
    Tags.of(app).add("project", "sensorpipe")
    apply_checkov_skips(app)
    return app


CHECKOV_SKIPS = Path(__file__).resolve().parents[1] / "checkov-skips.yaml"


def checkov_skips(path: Path = CHECKOV_SKIPS) -> list[dict]:
    skips = yaml.safe_load(path.read_text()) or []
    for skip in skips:
        if not (skip.get("check") and skip.get("resource") and str(skip.get("reason", "")).strip()):
            raise ValueError(f"{path}: every skip needs check, resource and reason: {skip}")
    return skips


def apply_checkov_skips(app: App, path: Path = CHECKOV_SKIPS) -> dict[str, list[str]]:
    """Write each waiver of `path` into the metadata of the resources it names (the construct
    id under its stack), where checkov reads it. Returns the paths each skip matched."""
    matched: dict[str, list[str]] = {}
    for skip in checkov_skips(path):
        hits = matched.setdefault(f"{skip['check']} {skip['resource']}", [])
        for stack in app.node.children:
            if not isinstance(stack, Stack):
                continue
            for node in stack.node.find_all():
                if isinstance(node, CfnResource) and node.node.scope.node.id == skip["resource"]:
                    entry = {"id": skip["check"], "comment": " ".join(skip["reason"].split())}
                    current = node.get_metadata("checkov") or {"skip": []}
                    current["skip"].append(entry)
                    node.add_metadata("checkov", current)
                    hits.append(node.node.path)
    return matched
