"""Who may do what: the EMR service role and instance profile, one runtime role per job family
(streaming, batch, hospital), the hospital proxy's producer role, the replication role, the
warehouse's COPY role and the IoT rule's role. Deployed before the stacks whose key and bucket
policies name these roles; the roles name keys and buckets by alias and by name.

Least privilege, in this file's terms: each statement names its actions and resources; the few
actions AWS only authorises on "*" (cloudwatch:PutMetricData, redshift-data statement reads) are
narrowed by a condition. No role here may touch the protected zone unless it is the hospital's
or the replication's (tests/test_infra.py checks both)."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from sensorpipe_estate.common import Names, output
from sensorpipe_estate.settings import EstateSettings


def settings_db(settings: EstateSettings, protected: bool = False) -> str:
    """The catalog databases of conf/*.yaml (catalog.database, catalog.protected_database)."""
    from sensorpipe.config.stream import CatalogSettings

    defaults = CatalogSettings()
    return defaults.protected_database if protected else defaults.database

# S3 prefixes of the lake bucket, as conf/emr.yaml, conf/health-emr.yaml and emr-steps.json lay
# them out (tests/test_access_contract.py derives every access from those files and checks
# these grants against them, both ways).
RAW = "lake/raw/"
ANOMALIES = "lake/anomalies/"
COMPACTED = "lake/compacted/"
CHECKPOINTS = "checkpoints/"
STAGING = "warehouse-staging/"
LINEAGE = "lineage/"
GENERAL = "hospital-general/"
MANIFESTS = "sensorpipe/staging/manifests/"
ARTIFACTS = "sensorpipe/artifacts/"
TLS = "sensorpipe/tls/"
EMR_LOGS = "emr-logs/"
# The protected bucket's prefix (conf/health-emr.yaml, conf/hospital-stream-emr.yaml).
HOSPITAL = "hospital/"
# Tables each family registers in the Glue Data Catalog (lib/sensorpipe: streaming/run.py,
# compaction.py, health/snapshot.py, health/tables.py).
LAKE_TABLES = ("events", "quarantine")
SNAPSHOT_TABLES = ("patient_profile", "billing_discrepancies")
# The secrets the hospital's jobs read (conf/health-emr.yaml), made by the keys-storage stack.
HOSPITAL_JDBC_SECRET = "hospital-jdbc"
PHI_TOKEN_SECRET = "phi-token-key"


class AccessStack(Stack):
    def __init__(self, scope: Construct, id_: str, settings: EstateSettings, **kwargs) -> None:  # noqa: ANN003
        super().__init__(scope, id_, **kwargs)
        self.names = names = Names(settings)
        self.settings = settings
        account = settings.account
        source_account = {"StringEquals": {"aws:SourceAccount": account}}

        # --- EMR service role and instance profile -----------------------------------------
        service = iam.Role(
            self,
            "EmrServiceRole",
            role_name=names.emr_service_role,
            assumed_by=iam.ServicePrincipal(
                "elasticmapreduce.amazonaws.com", conditions=source_account
            ),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(
                    "service-role/AmazonEMRServicePolicy_v2"
                )
            ],
            description="EMR service role (v2 managed policy: acts only on resources tagged "
            "for-use-with-amazon-emr-managed-policies=true)",
        )
        instance = iam.Role(
            self,
            "EmrInstanceRole",
            role_name=names.emr_instance_role,
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="EMR EC2 instance profile: artifacts, logs, and assuming the runtime roles",
        )
        service.add_to_policy(
            iam.PolicyStatement(
                sid="PassTheInstanceRole",
                actions=["iam:PassRole"],
                resources=[instance.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            )
        )
        # An external metastore's password is given to EMR as a secret ARN (EMR.secret@ in
        # spark-hive-site); EMR reads it with this role ("Store sensitive configuration data in
        # AWS Secrets Manager", EMR Release Guide).
        service.add_to_policy(
            iam.PolicyStatement(
                sid="MetastorePasswordSecret",
                actions=["secretsmanager:GetSecretValue"],
                resources=[
                    f"arn:aws:secretsmanager:{settings.region}:{account}:secret:"
                    f"{settings.name}/metastore*"
                ],
            )
        )
        iam.CfnInstanceProfile(
            self,
            "EmrInstanceProfile",
            roles=[instance.role_name],
            instance_profile_name=names.emr_instance_role,
        )
        # The instances read the artifacts and the in-transit certificates, write their logs,
        # and encrypt their local disks with the EMR key (security configuration).
        self._s3(instance, names.lake_bucket, read=[ARTIFACTS, TLS], write=[EMR_LOGS])
        self._key(instance, names.lake_key_alias, decrypt=True, generate=True)
        self._key(instance, names.emr_key_alias, decrypt=True, generate=True)
        # EBS encryption: EMR's service role lets EC2 use the EMR key for the volumes. Only
        # CreateGrant carries kms:GrantIsForAWSResource (AWS KMS Developer Guide, "AWS KMS
        # condition keys": set for grant operations an integrated service makes): on the other
        # actions the condition would never hold and the statement would grant nothing.
        resource, condition = names.keys_with_alias(names.emr_key_alias)
        service.add_to_policy(
            iam.PolicyStatement(
                sid="EbsVolumesUnderTheEmrKey",
                actions=["kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext"],
                resources=[resource],
                conditions=condition,
            )
        )
        service.add_to_policy(
            iam.PolicyStatement(
                sid="EbsGrantsForTheVolumes",
                actions=["kms:CreateGrant"],
                resources=[resource],
                conditions={**condition, "Bool": {"kms:GrantIsForAWSResource": "true"}},
            )
        )

        # --- runtime roles, one per job family -----------------------------------------------
        def runtime_role(id_: str, name: str, description: str) -> iam.Role:
            role = iam.Role(
                self,
                id_,
                role_name=name,
                description=description,
                assumed_by=iam.ArnPrincipal(instance.role_arn),
            )
            # EMR runtime roles: the instance profile assumes the role for the step and sets
            # the submitter as source identity (EMR Management Guide, "Runtime roles for
            # Amazon EMR steps").
            role.assume_role_policy.add_statements(
                iam.PolicyStatement(
                    actions=["sts:SetSourceIdentity", "sts:TagSession"],
                    principals=[iam.ArnPrincipal(instance.role_arn)],
                )
            )
            instance.add_to_policy(
                iam.PolicyStatement(
                    actions=["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"],
                    resources=[names.role_arn(name)],
                )
            )
            return role

        streaming = runtime_role(
            "StreamingJobsRole",
            names.streaming_role,
            "jobs/stream_sensor_anomalies.py: telemetry stream to the lake, shadows and warehouse",
        )
        # The file sink and its log are read back (raw), the checkpoint too; the anomalies
        # table is only written.
        self._s3(
            streaming,
            names.lake_bucket,
            read=[RAW, CHECKPOINTS, ARTIFACTS],
            write=[RAW, ANOMALIES, CHECKPOINTS, STAGING, LINEAGE],
        )
        self._key(streaming, names.lake_key_alias, decrypt=True, generate=True)
        self._kinesis_read(streaming, names.telemetry_stream)
        self._key(streaming, names.stream_key_alias, decrypt=True)
        streaming.add_to_policy(
            iam.PolicyStatement(
                sid="TrainShadows",
                actions=["iot:GetThingShadow", "iot:UpdateThingShadow"],
                resources=[f"arn:aws:iot:{settings.region}:{account}:thing/*"],
            )
        )
        streaming.add_to_policy(
            iam.PolicyStatement(
                sid="ShadowEndpoint",
                actions=["iot:DescribeEndpoint"],
                # DescribeEndpoint has no resource type: the job asks its region's data endpoint
                # when the deploy did not give one (alerts.endpoint_url unset).
                resources=["*"],
            )
        )
        self._warehouse(streaming)
        self._metrics(streaming)
        self._catalog(streaming, "StreamingTables", {settings_db(settings): LAKE_TABLES})

        batch = runtime_role(
            "BatchJobsRole",
            names.batch_role,
            "daily rollup, compaction, S3DistCp: the lake and the warehouse",
        )
        self._s3(
            batch,
            names.lake_bucket,
            read=[RAW, COMPACTED, MANIFESTS, ARTIFACTS],
            write=[COMPACTED, MANIFESTS, STAGING, LINEAGE],
        )
        self._key(batch, names.lake_key_alias, decrypt=True, generate=True)
        self._warehouse(batch)
        self._catalog(batch, "BatchTables", {settings_db(settings): ("compacted_events",)})

        hospital = runtime_role(
            "HospitalJobsRole",
            names.hospital_role,
            "ingest, patient snapshot and the device stream: the protected zone, and the "
            "general zone through the declared crossing",
        )
        self._s3(hospital, names.protected_bucket, read=[HOSPITAL], write=[HOSPITAL])
        self._key(hospital, names.protected_key_alias, decrypt=True, generate=True)
        self._s3(
            hospital,
            names.lake_bucket,
            read=[GENERAL, ARTIFACTS],
            write=[GENERAL, LINEAGE],
        )
        self._key(hospital, names.lake_key_alias, decrypt=True, generate=True)
        self._kinesis_read(hospital, names.hospital_stream)
        self._metrics(hospital)
        hospital.add_to_policy(
            iam.PolicyStatement(
                sid="HospitalSecrets",
                actions=["secretsmanager:GetSecretValue"],
                # Secrets Manager appends six random characters to a secret's name in its ARN.
                resources=[
                    f"arn:aws:secretsmanager:{settings.region}:{account}:secret:"
                    f"{settings.name}/{secret}-??????"
                    for secret in (HOSPITAL_JDBC_SECRET, PHI_TOKEN_SECRET)
                ],
            )
        )
        self._key(
            hospital,
            names.hospital_secrets_key_alias,
            decrypt=True,
            via=f"secretsmanager.{settings.region}.amazonaws.com",
        )
        from sensorpipe.health.tables import SOURCE_TABLES

        self._catalog(hospital, "HospitalTables", {
            settings_db(settings, protected=True): (
                *LAKE_TABLES, *SNAPSHOT_TABLES, *(t.output_name for t in SOURCE_TABLES)),
            settings_db(settings): SNAPSHOT_TABLES,
        })  # fmt: skip

        # --- Lake Formation's access to the registered locations (readers' credentials) ------
        lakeformation = iam.Role(
            self,
            "LakeFormationDataAccessRole",
            role_name=names.lakeformation_role,
            assumed_by=iam.ServicePrincipal("lakeformation.amazonaws.com",
                                            conditions=source_account),  # fmt: skip
            description="Lake Formation reads the registered lake and protected-zone locations "
            "for the readers it authorises (governance stack)",
        )
        self._s3(lakeformation, names.lake_bucket, read=[RAW, COMPACTED, GENERAL], write=[])
        self._s3(lakeformation, names.protected_bucket, read=[HOSPITAL], write=[])
        for alias in (names.lake_key_alias, names.protected_key_alias):
            self._key(lakeformation, alias, decrypt=True, via=f"s3.{settings.region}.amazonaws.com")

        # --- producers ----------------------------------------------------------------------
        proxy = iam.Role(
            self,
            "HospitalProxyRole",
            role_name=names.hospital_proxy_role,
            assumed_by=iam.ArnPrincipal(settings.streams.hospital_proxy_principal_arn),
            description="the hospital's trusted proxy: puts device readings on the hospital stream",
        )
        proxy.add_to_policy(
            iam.PolicyStatement(
                sid="PutHospitalReadings",
                actions=[
                    "kinesis:PutRecord",
                    "kinesis:PutRecords",
                    "kinesis:DescribeStreamSummary",
                    "kinesis:ListShards",
                ],
                resources=[names.stream_arn(names.hospital_stream)],
            )
        )
        self._key(proxy, names.protected_key_alias, generate=True)

        rule = iam.Role(
            self,
            "IotRuleRole",
            role_name=names.iot_rule_role,
            assumed_by=iam.ServicePrincipal("iot.amazonaws.com", conditions=source_account),
            description="the IoT topic rule: puts each train reading on the telemetry stream",
        )
        rule.add_to_policy(
            iam.PolicyStatement(
                sid="PutTrainReadings",
                actions=["kinesis:PutRecord"],
                resources=[names.stream_arn(names.telemetry_stream)],
            )
        )
        self._key(rule, names.stream_key_alias, generate=True)
        rule.add_to_policy(
            iam.PolicyStatement(
                sid="ErrorActionLogs",
                # The CloudWatch Logs action also describes the group's streams (AWS IoT Core
                # Developer Guide, "CloudWatch Logs" action: its role's required permissions).
                actions=["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
                resources=[
                    f"arn:aws:logs:{settings.region}:{account}:log-group:"
                    f"/{settings.name}/iot-rule-errors:*"
                ],
            )
        )

        # --- replication and warehouse COPY ---------------------------------------------------
        replication = iam.Role(
            self,
            "ReplicationRole",
            role_name=names.replication_role,
            assumed_by=iam.ServicePrincipal("s3.amazonaws.com", conditions=source_account),
            description="S3 cross-region replication of the lake and the protected zone",
        )
        for source, target in (
            (names.lake_bucket, names.lake_dr_bucket),
            (names.protected_bucket, names.protected_dr_bucket),
        ):
            replication.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:GetReplicationConfiguration", "s3:ListBucket"],
                    resources=[names.bucket_arn(source)],
                )
            )
            replication.add_to_policy(
                iam.PolicyStatement(
                    actions=[
                        "s3:GetObjectVersionForReplication",
                        "s3:GetObjectVersionAcl",
                        "s3:GetObjectVersionTagging",
                    ],
                    resources=[f"{names.bucket_arn(source)}/*"],
                )
            )
            replication.add_to_policy(
                iam.PolicyStatement(
                    actions=[
                        "s3:ReplicateObject",
                        "s3:ReplicateDelete",
                        "s3:ReplicateTags",
                        "s3:ObjectOwnerOverrideToBucketOwner",
                    ],
                    resources=[f"{names.bucket_arn(target)}/*"],
                )
            )
        for alias in (names.lake_key_alias, names.protected_key_alias):
            self._key(replication, alias, decrypt=True, via=f"s3.{settings.region}.amazonaws.com")
        for alias in (names.lake_dr_key_alias, names.protected_dr_key_alias):
            self._key(
                replication,
                alias,
                encrypt=True,
                region=settings.dr_region,
                via=f"s3.{settings.dr_region}.amazonaws.com",
            )

        copy = iam.Role(
            self,
            "WarehouseCopyRole",
            role_name=names.warehouse_copy_role,
            assumed_by=iam.CompositePrincipal(
                iam.ServicePrincipal("redshift.amazonaws.com"),
                iam.ServicePrincipal("redshift-serverless.amazonaws.com"),
            ),
            description="Redshift COPY from the staging prefix of the lake bucket",
        )
        self._s3(copy, names.lake_bucket, read=[STAGING], write=[])
        self._key(copy, names.lake_key_alias, decrypt=True)

        self.roles = {
            "EmrServiceRoleName": service,
            "EmrInstanceRoleName": instance,
            "StreamingJobsRoleArn": streaming,
            "BatchJobsRoleArn": batch,
            "HospitalJobsRoleArn": hospital,
            "HospitalProxyRoleArn": proxy,
            "WarehouseCopyRoleArn": copy,
            "LakeFormationDataAccessRoleArn": lakeformation,
        }
        output(self, "EmrServiceRoleName", service.role_name, "RunJobFlow ServiceRole")
        output(self, "EmrInstanceProfileName", names.emr_instance_role, "RunJobFlow JobFlowRole")
        for key in (
            "StreamingJobsRoleArn",
            "BatchJobsRoleArn",
            "HospitalJobsRoleArn",
            "HospitalProxyRoleArn",
            "WarehouseCopyRoleArn",
            "LakeFormationDataAccessRoleArn",
        ):
            output(self, key, self.roles[key].role_arn, f"{key[:-3]} (IAM role)")

    # --- statement builders ---------------------------------------------------------------
    def _s3(self, role: iam.Role, bucket: str, *, read: list[str], write: list[str]) -> None:
        arn = self.names.bucket_arn(bucket)
        prefixes = sorted(set(read) | set(write))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[arn],
                conditions=None
                if "" in prefixes
                else {"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes] + [""]}},
            )
        )
        if read:
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:GetObject"], resources=[f"{arn}/{p}*" for p in sorted(set(read))]
                )
            )
        if write:
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                    resources=[f"{arn}/{p}*" for p in sorted(set(write))],
                )
            )

    def _key(
        self,
        role: iam.Role,
        alias: str,
        *,
        decrypt: bool = False,
        generate: bool = False,
        encrypt: bool = False,
        region: str | None = None,
        via: str | None = None,
    ) -> None:
        """Use of the key behind `alias`: Decrypt to read what it protects, GenerateDataKey to
        write (S3 and Kinesis ask for a data key); Encrypt only where S3 replication encrypts
        into the DR region's key (Amazon S3 User Guide, "Replicating encrypted objects")."""
        actions = []
        if decrypt:
            actions += ["kms:Decrypt"]
        if generate:
            actions += ["kms:GenerateDataKey"]
        if encrypt:
            actions += ["kms:Encrypt"]
        resource, condition = self.names.keys_with_alias(alias, region)
        if via:
            condition = {**condition, "StringEquals": {"kms:ViaService": via}}
        role.add_to_policy(
            iam.PolicyStatement(actions=actions, resources=[resource], conditions=condition)
        )

    def _kinesis_read(self, role: iam.Role, stream: str) -> None:
        arn = self.names.stream_arn(stream)
        role.add_to_policy(
            iam.PolicyStatement(
                # What the project's Kinesis source calls (sources/kinesis.py).
                actions=["kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords"],
                resources=[arn],
            )
        )

    def _metrics(self, role: iam.Role) -> None:
        role.add_to_policy(
            iam.PolicyStatement(
                sid="OwnMetricsOnly",
                actions=["cloudwatch:PutMetricData"],
                resources=[
                    "*"
                ],  # PutMetricData has no resource type; the namespace condition scopes it
                conditions={
                    "StringEquals": {"cloudwatch:namespace": self.settings.metrics_namespace}
                },
            )
        )

    def _catalog(self, role: iam.Role, sid: str, tables: dict[str, tuple[str, ...]]) -> None:
        """Registering tables through Spark's Hive client on the Glue Data Catalog: CREATE
        DATABASE IF NOT EXISTS, CREATE TABLE IF NOT EXISTS, ALTER TABLE ADD IF NOT EXISTS
        PARTITION; each Glue action is authorised on the catalog, the database and the table
        (AWS Glue Developer Guide, "Specifying AWS Glue resource ARNs")."""
        base = f"arn:aws:glue:{self.settings.region}:{self.settings.account}"
        role.add_to_policy(
            iam.PolicyStatement(
                sid=f"{sid}Databases",
                actions=["glue:GetDatabase", "glue:CreateDatabase"],
                resources=[f"{base}:catalog", *(f"{base}:database/{db}" for db in sorted(tables))],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid=sid,
                actions=["glue:GetTable", "glue:CreateTable", "glue:GetPartition",
                         "glue:GetPartitions", "glue:BatchCreatePartition"],
                resources=[f"{base}:catalog",
                           *(f"{base}:database/{db}" for db in sorted(tables)),
                           *(f"{base}:table/{db}/{t}" for db in sorted(tables)
                             for t in tables[db])],
            )
        )  # fmt: skip

    def _warehouse(self, role: iam.Role) -> None:
        s, n = self.settings, self.names
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WarehouseStatements",
                # The warehouse sink's one call per load (sinks/warehouse.py).
                actions=["redshift-data:BatchExecuteStatement"],
                # the workgroup's ARN holds an id CloudFormation assigns: this account and region
                resources=[f"arn:aws:redshift-serverless:{s.region}:{s.account}:workgroup/*"],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="OwnStatementResults",
                actions=["redshift-data:DescribeStatement"],
                resources=[
                    "*"
                ],  # no resource type; the Data API limits these to the caller's statements
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WarehouseSecret",
                actions=["secretsmanager:GetSecretValue"],
                resources=[
                    f"arn:aws:secretsmanager:{s.region}:{s.account}:secret:"
                    f"{s.name}/warehouse/loader-*"
                ],
            )
        )
        self._key(
            role,
            n.warehouse_key_alias,
            decrypt=True,
            via=f"secretsmanager.{s.region}.amazonaws.com",
        )
