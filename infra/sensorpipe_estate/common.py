"""Pieces every stack uses: the estate's names, secure buckets, and how outputs are named."""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sensorpipe_estate.settings import EstateSettings

# Tag EMR's v2 managed service policy requires on the subnets and security groups it may use
# ("AmazonEMRServicePolicy_v2", EMR Management Guide, "Service role for Amazon EMR").
EMR_MANAGED_TAG = ("for-use-with-amazon-emr-managed-policies", "true")


class Names:
    """Every name one stack uses for a resource of another, derived from the settings, so
    stacks refer to each other by name where a CloudFormation reference would be a cycle
    (key policies that name roles, roles that name keys) or cross regions (replication)."""

    def __init__(self, settings: EstateSettings) -> None:
        self.s = settings
        n = settings.name
        self.lake_bucket = settings.bucket_name("lake")
        self.protected_bucket = settings.bucket_name("protected")
        self.access_logs_bucket = settings.bucket_name("access-logs")
        self.trail_bucket = settings.bucket_name("trail")
        self.lake_dr_bucket = settings.bucket_name("lake-dr", settings.dr_region)
        self.protected_dr_bucket = settings.bucket_name("protected-dr", settings.dr_region)
        self.dr_access_logs_bucket = settings.bucket_name("access-logs", settings.dr_region)
        # KMS aliases (the DR region's keys are named by alias in replication rules).
        self.lake_key_alias = f"alias/{n}-lake"
        self.protected_key_alias = f"alias/{n}-protected"
        self.stream_key_alias = f"alias/{n}-stream"
        self.ops_key_alias = f"alias/{n}-ops"
        self.warehouse_key_alias = f"alias/{n}-warehouse"
        self.emr_key_alias = f"alias/{n}-emr"
        self.hospital_secrets_key_alias = f"alias/{n}-hospital-secrets"
        self.lake_dr_key_alias = f"alias/{n}-lake-dr"
        self.protected_dr_key_alias = f"alias/{n}-protected-dr"
        # Roles named here because key policies and trust policies name them.
        self.emr_service_role = f"{n}-emr-service"
        self.lakeformation_role = f"{n}-lakeformation-data-access"
        self.emr_instance_role = f"{n}-emr-instance"
        self.streaming_role = f"{n}-streaming-jobs"
        self.batch_role = f"{n}-batch-jobs"
        self.hospital_role = f"{n}-hospital-jobs"
        self.hospital_proxy_role = f"{n}-hospital-proxy"
        self.replication_role = f"{n}-replication"
        self.warehouse_copy_role = f"{n}-warehouse-copy"
        self.iot_rule_role = f"{n}-iot-telemetry-rule"
        self.workgroup = f"{n}-warehouse"
        self.namespace = f"{n}-warehouse"
        self.telemetry_stream = settings.streams.telemetry_stream
        self.hospital_stream = settings.streams.hospital_stream

    def role_arn(self, name: str) -> str:
        return f"arn:aws:iam::{self.s.account}:role/{name}"

    def bucket_arn(self, bucket: str) -> str:
        return f"arn:aws:s3:::{bucket}"

    def stream_arn(self, stream: str) -> str:
        return f"arn:aws:kinesis:{self.s.region}:{self.s.account}:stream/{stream}"

    def keys_with_alias(self, alias: str, region: str | None = None) -> tuple[str, dict]:
        """(resource, condition) granting use of the key behind `alias` without naming the
        key's id, which the granting stack cannot know without a dependency cycle."""
        resource = f"arn:aws:kms:{region or self.s.region}:{self.s.account}:key/*"
        return resource, {"ForAnyValue:StringEquals": {"kms:ResourceAliases": alias}}


def output(stack: Stack, key: str, value: str, description: str) -> None:
    """A stack output: `sensorpipe deploy` reads these by key (DescribeStacks)."""
    CfnOutput(stack, key, value=value, description=description)


def customer_key(
    scope: Construct, id_: str, alias: str, description: str, *, admins_only: bool = False
) -> kms.Key:
    """A customer-managed key with yearly rotation. With admins_only the account root may
    administer the key but not use it: only the principals the key policy names can encrypt
    or decrypt (the protected zone's key)."""
    policy = None
    if admins_only:
        account = Stack.of(scope).account
        policy = iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(
                    sid="KeyAdministrationWithoutUse",
                    principals=[iam.AccountRootPrincipal()],
                    actions=[
                        "kms:Create*",
                        "kms:Describe*",
                        "kms:Enable*",
                        "kms:List*",
                        "kms:Put*",
                        "kms:Update*",
                        "kms:Revoke*",
                        "kms:Disable*",
                        "kms:Get*",
                        "kms:Delete*",
                        "kms:TagResource",
                        "kms:UntagResource",
                        "kms:ScheduleKeyDeletion",
                        "kms:CancelKeyDeletion",
                    ],
                    resources=["*"],  # in a key policy, "*" is this key
                    conditions={"StringEquals": {"aws:PrincipalAccount": account}},
                )
            ]
        )
    return kms.Key(
        scope,
        id_,
        alias=alias,
        description=description,
        enable_key_rotation=True,
        policy=policy,
        removal_policy=RemovalPolicy.RETAIN,
    )


def secure_bucket(
    scope: Construct,
    id_: str,
    name: str,
    *,
    key: kms.IKey | None,
    access_logs: s3.IBucket | None,
    log_prefix: str | None = None,
    lifecycle: list[s3.LifecycleRule] | None = None,
) -> s3.Bucket:
    """Versioned, Block Public Access, TLS only, encrypted at rest (SSE-KMS with a bucket key
    when `key` is given; SSE-S3 only for the access-log buckets: "You can use default bucket
    encryption on the target bucket only if you use ... SSE-S3 ... SSE-KMS is not supported",
    Amazon S3 User Guide, "Enabling Amazon S3 server access logging"), with server access logs
    unless it is itself the log bucket."""
    bucket = s3.Bucket(
        scope,
        id_,
        bucket_name=name,
        encryption=s3.BucketEncryption.KMS if key else s3.BucketEncryption.S3_MANAGED,
        encryption_key=key,
        bucket_key_enabled=bool(key),
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        minimum_tls_version=1.2,
        versioned=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=log_prefix or (f"{name}/" if access_logs else None),
        lifecycle_rules=lifecycle,
        removal_policy=RemovalPolicy.RETAIN,
    )
    if key is not None:
        deny_wrong_encryption(bucket, key_arn=key.key_arn)
    return bucket


def deny_wrong_encryption(bucket: s3.Bucket, *, key_arn: str) -> None:
    """Refuse writes that ask for another encryption (SSE-S3, SSE-C) or another KMS key.
    A write that names none gets the bucket's default (SSE-KMS with this key): Spark, EMRFS and
    S3 replication rely on the default, so its absence is not refused."""
    objects = bucket.arn_for_objects("*")
    bucket.add_to_resource_policy(
        iam.PolicyStatement(
            sid="DenyOtherEncryption",
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["s3:PutObject"],
            resources=[objects],
            conditions={
                "Null": {"s3:x-amz-server-side-encryption": "false"},
                "StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"},
            },
        )
    )
    bucket.add_to_resource_policy(
        iam.PolicyStatement(
            sid="DenyOtherKmsKey",
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["s3:PutObject"],
            resources=[objects],
            conditions={
                "Null": {"s3:x-amz-server-side-encryption-aws-kms-key-id": "false"},
                "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn},
            },
        )
    )
    bucket.add_to_resource_policy(
        iam.PolicyStatement(
            sid="DenyCustomerProvidedKeys",
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["s3:PutObject"],
            resources=[objects],
            conditions={"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}},
        )
    )


def archive_lifecycle(
    settings: EstateSettings,
    archive_class: s3.StorageClass = s3.StorageClass.GLACIER_INSTANT_RETRIEVAL,
) -> list[s3.LifecycleRule]:
    """Infrequent access, then Glacier: Instant Retrieval in the primary region, so Spark still
    reads old partitions in milliseconds; Deep Archive for the DR copies."""
    st = settings.storage
    return [
        s3.LifecycleRule(
            id="archive",
            transitions=[
                s3.Transition(
                    storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                    transition_after=Duration.days(st.infrequent_access_after_days),
                ),
                s3.Transition(
                    storage_class=archive_class,
                    transition_after=Duration.days(st.glacier_after_days),
                ),
            ],
            noncurrent_version_expiration=Duration.days(st.noncurrent_versions_expire_after_days),
            abort_incomplete_multipart_upload_after=Duration.days(
                st.incomplete_uploads_expire_after_days
            ),
        )
    ]


def housekeeping_lifecycle(settings: EstateSettings, expire_days: int) -> list[s3.LifecycleRule]:
    st = settings.storage
    return [
        s3.LifecycleRule(
            id="housekeeping",
            expiration=Duration.days(expire_days),
            noncurrent_version_expiration=Duration.days(st.noncurrent_versions_expire_after_days),
            abort_incomplete_multipart_upload_after=Duration.days(
                st.incomplete_uploads_expire_after_days
            ),
        )
    ]
