"""Disaster recovery region: the replicas of the lake and of the protected zone, each under a
key of its own in that region. Deployed first: the primary region's replication rules name
these buckets and keys (by alias)."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sensorpipe_estate.common import (
    Names,
    archive_lifecycle,
    customer_key,
    housekeeping_lifecycle,
    output,
    secure_bucket,
)
from sensorpipe_estate.settings import EstateSettings


class DisasterRecoveryStack(Stack):
    def __init__(self, scope: Construct, id_: str, settings: EstateSettings, **kwargs) -> None:  # noqa: ANN003
        super().__init__(scope, id_, **kwargs)
        names = Names(settings)
        logs = secure_bucket(
            self,
            "AccessLogs",
            names.dr_access_logs_bucket,
            key=None,
            access_logs=None,
            lifecycle=housekeeping_lifecycle(
                settings, settings.storage.access_logs_expire_after_days
            ),
        )
        lake_key = customer_key(
            self, "LakeReplicaKey", names.lake_dr_key_alias, "sensorpipe lake replica (DR region)"
        )
        # The protected replica's key: like the primary protected key, usable only by the
        # principals named here (replication writes; the hospital jobs read after a failover).
        protected_key = customer_key(
            self,
            "ProtectedReplicaKey",
            names.protected_dr_key_alias,
            "sensorpipe protected zone replica (DR region)",
            admins_only=True,
        )
        protected_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="ReplicationEncrypts",
                principals=[iam.ArnPrincipal(names.role_arn(names.replication_role))],
                actions=["kms:Encrypt", "kms:GenerateDataKey*", "kms:DescribeKey"],
                resources=["*"],
            )
        )
        protected_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="HospitalJobsAfterFailover",
                principals=[iam.ArnPrincipal(names.role_arn(names.hospital_role))],
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:DescribeKey"],
                resources=["*"],
            )
        )
        deep = archive_lifecycle(settings, s3.StorageClass.DEEP_ARCHIVE)
        lake = secure_bucket(
            self,
            "LakeReplica",
            names.lake_dr_bucket,
            key=lake_key,
            access_logs=logs,
            lifecycle=deep,
        )
        protected = secure_bucket(
            self,
            "ProtectedReplica",
            names.protected_dr_bucket,
            key=protected_key,
            access_logs=logs,
            lifecycle=deep,
        )
        for bucket in (lake, protected):
            # Replicated objects keep the source owner; the replication role may write here.
            bucket.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="ReplicationWrites",
                    principals=[iam.ArnPrincipal(names.role_arn(names.replication_role))],
                    actions=[
                        "s3:ReplicateObject",
                        "s3:ReplicateDelete",
                        "s3:ReplicateTags",
                        "s3:ObjectOwnerOverrideToBucketOwner",
                    ],
                    resources=[bucket.arn_for_objects("*")],
                )
            )
        output(self, "LakeReplicaBucketName", lake.bucket_name, "lake replica (DR region)")
        output(
            self,
            "ProtectedReplicaBucketName",
            protected.bucket_name,
            "protected zone replica (DR region)",
        )
        output(self, "ProtectedReplicaKeyArn", protected_key.key_arn, "protected replica key")
