"""Keys and storage: customer-managed KMS keys, the lake and protected-zone buckets (versioned,
Block Public Access, TLS only, SSE-KMS with bucket keys, wrong encryption refused, access logs,
lifecycle to Glacier, cross-region replication), and a multi-region CloudTrail with S3 data
events on both buckets and log file validation."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_cloudtrail as cloudtrail
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
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


class KeysStorageStack(Stack):
    def __init__(self, scope: Construct, id_: str, settings: EstateSettings, **kwargs) -> None:  # noqa: ANN003
        super().__init__(scope, id_, **kwargs)
        names = Names(settings)
        region, account = settings.region, settings.account

        # --- keys ---------------------------------------------------------------------------
        self.lake_key = customer_key(
            self, "LakeKey", names.lake_key_alias, "sensorpipe lake and general zone"
        )
        self.stream_key = customer_key(
            self, "StreamKey", names.stream_key_alias, "sensorpipe train telemetry stream"
        )
        self.warehouse_key = customer_key(
            self,
            "WarehouseKey",
            names.warehouse_key_alias,
            "sensorpipe Redshift namespace and its admin secret",
        )
        self.emr_key = customer_key(
            self,
            "EmrKey",
            names.emr_key_alias,
            "sensorpipe EMR local disks and EBS (security configuration)",
        )
        self.ops_key = customer_key(
            self,
            "OpsKey",
            names.ops_key_alias,
            "sensorpipe CloudTrail, log groups and the alarm topic",
        )
        self._ops_key_services(self.ops_key, region, account)
        # The protected zone's key: the account may administer it but only the hospital's
        # principals may use it (jobs read and write; the proxy encrypts stream records; S3
        # replication decrypts to copy objects into the DR region's protected key).
        self.protected_key = customer_key(
            self,
            "ProtectedKey",
            names.protected_key_alias,
            "sensorpipe protected zone (PHI): hospital jobs only",
            admins_only=True,
        )
        self.protected_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="HospitalJobsUse",
                principals=[iam.ArnPrincipal(names.role_arn(names.hospital_role))],
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:DescribeKey"],
                resources=["*"],
            )
        )
        self.protected_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="HospitalProxyEncryptsStreamRecords",
                principals=[iam.ArnPrincipal(names.role_arn(names.hospital_proxy_role))],
                actions=["kms:GenerateDataKey", "kms:DescribeKey"],
                resources=["*"],
                conditions={"StringEquals": {"kms:ViaService": f"kinesis.{region}.amazonaws.com"}},
            )
        )
        self.protected_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="LakeFormationReadsForClinicians",
                principals=[iam.ArnPrincipal(names.role_arn(names.lakeformation_role))],
                actions=["kms:Decrypt"],
                resources=["*"],
                conditions={"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
            )
        )
        self.protected_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="ReplicationDecrypts",
                principals=[iam.ArnPrincipal(names.role_arn(names.replication_role))],
                actions=["kms:Decrypt", "kms:DescribeKey"],
                resources=["*"],
                conditions={"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
            )
        )

        # --- the hospital jobs' secrets ---------------------------------------------------
        # conf/health-emr.yaml reads them by name (source.password_secret_id,
        # general.token_key_secret_id); the hospital role may read these two and no other
        # principal may (each secret's policy). Both start as random values: the operator puts
        # the hospital database's password, and may replace the token key (64 hex characters,
        # `sensorpipe phi-key`), before the first import (docs/estate.md). Their own key, not
        # the protected zone's: Secrets Manager encrypts with the key on the deployer's behalf,
        # which the protected key (usable by the hospital's principals only) must not allow.
        self.hospital_secrets_key = customer_key(
            self, "HospitalSecretsKey", names.hospital_secrets_key_alias,
            "sensorpipe hospital jobs' secrets (database password, token key)",
        )  # fmt: skip
        self.hospital_jdbc_secret = secretsmanager.Secret(
            self,
            "HospitalJdbcSecret",
            secret_name=f"{settings.name}/hospital-jdbc",
            encryption_key=self.hospital_secrets_key,
            description="password of the hospital database's read-only import user",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                exclude_punctuation=True, password_length=32
            ),
        )
        self.phi_token_secret = secretsmanager.Secret(
            self,
            "PhiTokenKeySecret",
            secret_name=f"{settings.name}/phi-token-key",
            encryption_key=self.hospital_secrets_key,
            description="HMAC-SHA256 key of the general zone's tokens (hex, 32 bytes)",
            # 64 characters of 0-9a-f: a 32-byte key in hex, as phi.py requires.
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True, exclude_uppercase=True,
                exclude_characters="ghijklmnopqrstuvwxyz",
            ),
        )  # fmt: skip

        hospital_role = names.role_arn(names.hospital_role)
        for secret in (self.hospital_jdbc_secret, self.phi_token_secret):
            secret.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="OnlyTheHospitalJobsRead",
                    effect=iam.Effect.DENY,
                    principals=[iam.AnyPrincipal()],
                    actions=["secretsmanager:GetSecretValue"],
                    resources=["*"],
                    conditions={"StringNotEquals": {"aws:PrincipalArn": hospital_role}},
                )
            )

        # --- buckets ------------------------------------------------------------------------
        self.access_logs = secure_bucket(
            self,
            "AccessLogs",
            names.access_logs_bucket,
            key=None,
            access_logs=None,
            lifecycle=housekeeping_lifecycle(
                settings, settings.storage.access_logs_expire_after_days
            ),
        )
        self.lake = secure_bucket(
            self,
            "Lake",
            names.lake_bucket,
            key=self.lake_key,
            access_logs=self.access_logs,
            lifecycle=archive_lifecycle(settings),
        )
        self.protected = secure_bucket(
            self,
            "Protected",
            names.protected_bucket,
            key=self.protected_key,
            access_logs=self.access_logs,
            lifecycle=archive_lifecycle(settings),
        )
        self._replicate(self.lake, names.lake_dr_bucket, names.lake_dr_key_alias, names, settings)
        self._replicate(
            self.protected, names.protected_dr_bucket, names.protected_dr_key_alias, names, settings
        )
        self.trail_bucket = secure_bucket(
            self,
            "TrailLogs",
            names.trail_bucket,
            key=self.ops_key,
            access_logs=self.access_logs,
            lifecycle=housekeeping_lifecycle(
                settings, settings.storage.trail_logs_expire_after_days
            ),
        )

        # --- CloudTrail ---------------------------------------------------------------------
        trail_group = logs.LogGroup(
            self,
            "TrailLogGroup",
            log_group_name=f"/{settings.name}/cloudtrail",
            encryption_key=self.ops_key,
            retention=logs.RetentionDays.ONE_YEAR,
            removal_policy=RemovalPolicy.RETAIN,
        )
        trail = cloudtrail.Trail(
            self,
            "Trail",
            trail_name=f"{settings.name}-trail",
            bucket=self.trail_bucket,
            encryption_key=self.ops_key,
            enable_file_validation=True,
            is_multi_region_trail=True,
            include_global_service_events=True,
            send_to_cloud_watch_logs=True,
            cloud_watch_log_group=trail_group,
        )
        trail.node.add_dependency(self.trail_bucket.policy)
        trail.add_s3_event_selector(
            [
                cloudtrail.S3EventSelector(bucket=self.lake),
                cloudtrail.S3EventSelector(bucket=self.protected),
            ],
            read_write_type=cloudtrail.ReadWriteType.ALL,
            include_management_events=True,
        )

        output(self, "LakeBucketName", self.lake.bucket_name, "the lake, general zone, artifacts")
        output(self, "ProtectedBucketName", self.protected.bucket_name, "the protected zone (PHI)")
        output(self, "LakeKeyArn", self.lake_key.key_arn, "SSE-KMS key of the lake bucket")
        output(self, "ProtectedKeyArn", self.protected_key.key_arn, "key of the protected zone")
        output(self, "EmrKeyArn", self.emr_key.key_arn, "EMR local disk and EBS encryption")
        output(self, "StreamKeyArn", self.stream_key.key_arn, "train telemetry stream key")

    def _ops_key_services(self, key: kms.Key, region: str, account: str) -> None:
        """The services that encrypt with the operations key on the account's behalf."""
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudTrailEncryptsLogs",
                principals=[iam.ServicePrincipal("cloudtrail.amazonaws.com")],
                actions=["kms:GenerateDataKey*", "kms:DescribeKey"],
                resources=["*"],
                conditions={
                    "StringLike": {
                        "kms:EncryptionContext:aws:cloudtrail:arn": (
                            f"arn:aws:cloudtrail:*:{account}:trail/*"
                        )
                    }
                },
            )
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchLogsEncrypts",
                principals=[iam.ServicePrincipal(f"logs.{region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:aws:logs:{region}:{account}:log-group:*"
                        )
                    }
                },
            )
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AlarmsAndEventsPublishToTheEncryptedTopic",
                principals=[
                    iam.ServicePrincipal("cloudwatch.amazonaws.com"),
                    iam.ServicePrincipal("events.amazonaws.com"),
                ],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": account}},
            )
        )

    @staticmethod
    def _replicate(
        bucket: s3.Bucket,
        target: str,
        target_key_alias: str,
        names: Names,
        settings: EstateSettings,
    ) -> None:
        """Every object, delete markers included, to the DR region under that region's key."""
        dr = settings.dr_region
        cfn: s3.CfnBucket = bucket.node.default_child  # type: ignore[assignment]
        cfn.replication_configuration = s3.CfnBucket.ReplicationConfigurationProperty(
            role=names.role_arn(names.replication_role),
            rules=[
                s3.CfnBucket.ReplicationRuleProperty(
                    id="to-dr-region",
                    status="Enabled",
                    priority=1,
                    filter=s3.CfnBucket.ReplicationRuleFilterProperty(prefix=""),
                    delete_marker_replication=s3.CfnBucket.DeleteMarkerReplicationProperty(
                        status="Enabled"
                    ),
                    source_selection_criteria=s3.CfnBucket.SourceSelectionCriteriaProperty(
                        sse_kms_encrypted_objects=s3.CfnBucket.SseKmsEncryptedObjectsProperty(
                            status="Enabled"
                        )
                    ),
                    destination=s3.CfnBucket.ReplicationDestinationProperty(
                        bucket=names.bucket_arn(target),
                        storage_class="STANDARD_IA",
                        encryption_configuration=s3.CfnBucket.EncryptionConfigurationProperty(
                            replica_kms_key_id=f"arn:aws:kms:{dr}:{settings.account}:{target_key_alias}"
                        ),
                    ),
                )
            ],
        )
