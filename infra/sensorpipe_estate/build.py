"""The app: the estate's stacks in deployment order, each in its region."""

from __future__ import annotations

from aws_cdk import App, Environment, Tags

from sensorpipe_estate.access import AccessStack
from sensorpipe_estate.dr import DisasterRecoveryStack
from sensorpipe_estate.monitoring import MonitoringStack
from sensorpipe_estate.network import NetworkStack
from sensorpipe_estate.settings import EstateSettings
from sensorpipe_estate.storage import KeysStorageStack
from sensorpipe_estate.streams_iot import StreamsIotStack
from sensorpipe_estate.warehouse import WarehouseReportingStack

STACK_ORDER = ("access", "dr", "keys-storage", "network", "streams-iot", "warehouse-reporting",
               "monitoring")  # fmt: skip


def build_app(settings: EstateSettings, outdir: str | None = None) -> App:
    # Access logs are delivered under a bucket policy, not an ACL (buckets keep ACLs disabled).
    context = {"@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True}
    app = App(outdir=outdir, context=context) if outdir else App(context=context)
    here = Environment(account=settings.account, region=settings.region)
    there = Environment(account=settings.account, region=settings.dr_region)
    n = settings.name

    access = AccessStack(app, f"{n}-access", settings, env=here,
                         description="sensorpipe: IAM roles (EMR, runtime roles, producers, replication)")
    dr = DisasterRecoveryStack(app, f"{n}-dr", settings, env=there,
                               description="sensorpipe: disaster recovery replicas and keys")
    dr.add_stack_dependency(access)
    storage = KeysStorageStack(app, f"{n}-keys-storage", settings, env=here,
                               description="sensorpipe: KMS keys, lake and protected buckets, CloudTrail")
    storage.add_stack_dependency(dr)
    storage.add_stack_dependency(access)
    network = NetworkStack(app, f"{n}-network", settings, storage.ops_key, env=here,
                           description="sensorpipe: private VPC, endpoints, EMR security groups")
    streams = StreamsIotStack(app, f"{n}-streams-iot", settings, storage.stream_key,
                              storage.protected_key, storage.ops_key, env=here,
                              description="sensorpipe: encrypted streams, IoT rule and policy")
    streams.add_stack_dependency(access)
    warehouse = WarehouseReportingStack(
        app, f"{n}-warehouse-reporting", settings, network.vpc,
        [network.emr_primary_sg, network.emr_core_sg], storage.warehouse_key, env=here,
        description="sensorpipe: Redshift Serverless and QuickSight",
    )
    warehouse.add_stack_dependency(access)
    MonitoringStack(app, f"{n}-monitoring", settings, storage.ops_key,
                    [streams.telemetry, streams.hospital], streams.rule_name, env=here,
                    description="sensorpipe: alarms to an SNS topic")
    Tags.of(app).add("project", "sensorpipe")
    return app
