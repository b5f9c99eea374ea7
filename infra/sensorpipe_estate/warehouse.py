"""Share processed data: Redshift Serverless in the private subnets (not publicly accessible,
a non-default port, KMS encryption, TLS required, enhanced VPC routing so COPY and UNLOAD stay
on the S3 gateway endpoint, the admin password managed in Secrets Manager, audit logs), reached
only from the EMR cluster and the corporate network; engineers sign in through the corporate
identity provider; QuickSight reports over the aggregates, in the warehouse's region."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_quicksight as quicksight
from aws_cdk import aws_redshiftserverless as redshift
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct
from sensorpipe.sinks.warehouse import DAILY_AGGREGATES, MINUTE_AGGREGATES, Table

from sensorpipe_estate.common import Names, output
from sensorpipe_estate.dashboard import (
    INCIDENT_LIFECYCLE_COLUMNS,
    INCIDENT_LIFECYCLE_SQL,
    dashboard_definition,
)
from sensorpipe_estate.settings import EstateSettings


def quicksight_columns(table: Table) -> list[quicksight.CfnDataSet.InputColumnProperty]:
    """The warehouse table's columns (its one definition, sinks/warehouse.py) as QuickSight
    input columns."""
    kinds = {
        "VARCHAR": "STRING",
        "BIGINT": "INTEGER",
        "DOUBLE": "DECIMAL",
        "TIMESTAMP": "DATETIME",
        "DATE": "DATETIME",
    }
    return [
        quicksight.CfnDataSet.InputColumnProperty(
            name=c.name, type=kinds[c.redshift.split("(")[0].split()[0]]
        )
        for c in table.columns
    ]


class WarehouseReportingStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        settings: EstateSettings,
        vpc: ec2.IVpc,
        emr_groups: list[ec2.ISecurityGroup],
        warehouse_key: kms.IKey,
        **kwargs,  # noqa: ANN003
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        names = Names(settings)
        wh = settings.warehouse
        subnets = [s.subnet_id for s in vpc.isolated_subnets]

        self.security_group = ec2.SecurityGroup(
            self,
            "WarehouseSg",
            vpc=vpc,
            allow_all_outbound=False,
            description="Redshift Serverless: EMR, QuickSight and the corporate network only",
        )
        for group in emr_groups:
            self.security_group.add_ingress_rule(group, ec2.Port.tcp(wh.port), "EMR cluster")
        self.security_group.add_ingress_rule(
            ec2.Peer.ipv4(settings.network.corporate_cidr),
            ec2.Port.tcp(wh.port),
            "corporate network (Direct Connect/VPN)",
        )
        # COPY with enhanced VPC routing reads the staging prefix through the VPC: HTTPS to S3's
        # gateway endpoint, whose addresses are the region's S3 prefix list (Amazon Redshift
        # Management Guide, "Enhanced VPC routing": the security group must allow it).
        self.security_group.add_egress_rule(
            ec2.Peer.prefix_list(settings.network.s3_prefix_list_id),
            ec2.Port.tcp(443),
            "COPY from S3 through the gateway endpoint (enhanced VPC routing)",
        )

        self.namespace = redshift.CfnNamespace(
            self,
            "Namespace",
            namespace_name=names.namespace,
            db_name=wh.database,
            admin_username=wh.admin_username,
            manage_admin_password=True,
            admin_password_secret_kms_key_id=warehouse_key.key_arn,
            kms_key_id=warehouse_key.key_arn,
            iam_roles=[names.role_arn(names.warehouse_copy_role)],
            default_iam_role_arn=names.role_arn(names.warehouse_copy_role),
            log_exports=["userlog", "connectionlog", "useractivitylog"],
        )
        self.workgroup = redshift.CfnWorkgroup(
            self,
            "Workgroup",
            workgroup_name=names.workgroup,
            namespace_name=names.namespace,
            base_capacity=wh.base_capacity,
            publicly_accessible=False,
            enhanced_vpc_routing=True,
            port=wh.port,
            subnet_ids=subnets,
            security_group_ids=[self.security_group.security_group_id],
            config_parameters=[
                redshift.CfnWorkgroup.ConfigParameterProperty(
                    parameter_key="require_ssl", parameter_value="true"
                ),
                redshift.CfnWorkgroup.ConfigParameterProperty(
                    parameter_key="enable_user_activity_logging", parameter_value="true"
                ),
            ],
        )
        self.workgroup.add_resource_dependency(self.namespace)

        # Engineers: the corporate identity provider federated into IAM (SAML). The role may
        # only ask this workgroup for temporary database credentials in the engineer's name.
        engineers = iam.Role(
            self,
            "EngineersRole",
            role_name=f"{settings.name}-warehouse-engineers",
            # With sts:TagSession the identity provider's session tags (the engineer's name)
            # reach the session, so GetCredentials maps each engineer to a database user of
            # their own instead of one shared user.
            assumed_by=iam.FederatedPrincipal(
                wh.saml_provider_arn,
                {"StringEquals": {"SAML:aud": "https://signin.aws.amazon.com/saml"}},
                "sts:AssumeRoleWithSAML",
            ).with_session_tags(),
            description="warehouse engineers, signed in through the corporate identity provider",
        )
        engineers.add_to_policy(
            iam.PolicyStatement(
                actions=["redshift-serverless:GetCredentials", "redshift-serverless:GetWorkgroup"],
                resources=[self.workgroup.attr_workgroup_workgroup_arn],
            )
        )
        # `sensorpipe view` (docs/view.md) reads through the Data API as the engineer: SQL on
        # this workgroup only, and the results of the engineer's own statements only (the
        # Redshift Management Guide's pattern for the Data API: the statement owner's user id).
        engineers.add_to_policy(
            iam.PolicyStatement(
                actions=["redshift-data:ExecuteStatement", "redshift-data:BatchExecuteStatement"],
                resources=[self.workgroup.attr_workgroup_workgroup_arn],
            )
        )
        engineers.add_to_policy(
            iam.PolicyStatement(
                actions=["redshift-data:DescribeStatement", "redshift-data:GetStatementResult",
                         "redshift-data:CancelStatement", "redshift-data:ListStatements"],
                resources=["*"],  # these actions have no resource type
                conditions={"StringEquals": {
                    "redshift-data:statement-owner-iam-userid": "${aws:userid}"}},
            )  # fmt: skip
        )

        # QuickSight, in this stack's region, which is the warehouse's (asserted in settings
        # and by tests/test_infra.py); it connects over a VPC connection with a read-only user.
        def database_user(
            id_: str, name: str, username: str, description: str
        ) -> secretsmanager.Secret:
            """A warehouse user's generated password (the user itself is made in SQL)."""
            return secretsmanager.Secret(
                self,
                id_,
                secret_name=f"{settings.name}/warehouse/{name}",
                encryption_key=warehouse_key,
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    secret_string_template=f'{{"username": "{username}"}}',
                    generate_string_key="password",
                    exclude_punctuation=True,
                    password_length=32,
                ),
                description=description,
            )

        reader = database_user(
            "ReportingReader",
            "quicksight-reader",
            "quicksight_reader",
            "read-only warehouse user for QuickSight (SELECT on the aggregates)",
        )
        # The jobs load as their own user, not as the admin (whose password Redshift manages).
        loader = database_user(
            "WarehouseLoader",
            "loader",
            "sensorpipe_loader",
            "the jobs' warehouse user (CREATE, INSERT, DELETE on the aggregates)",
        )
        reporting_sg = ec2.SecurityGroup(
            self,
            "ReportingSg",
            vpc=vpc,
            allow_all_outbound=False,
            description="QuickSight VPC connection to the warehouse",
        )
        reporting_sg.add_egress_rule(self.security_group, ec2.Port.tcp(wh.port), "warehouse")
        self.security_group.add_ingress_rule(reporting_sg, ec2.Port.tcp(wh.port), "QuickSight")
        # QuickSight's network interfaces are not stateful: the replies from the warehouse need
        # an inbound rule of their own (Amazon QuickSight User Guide, "Configuring the VPC
        # security groups": inbound all TCP from the data source's security group).
        reporting_sg.add_ingress_rule(
            self.security_group, ec2.Port.all_tcp(), "replies from the warehouse (not stateful)"
        )
        qs_role = iam.Role(
            self,
            "QuickSightVpcRole",
            role_name=f"{settings.name}-quicksight-vpc",
            assumed_by=iam.ServicePrincipal("quicksight.amazonaws.com"),
            description="QuickSight: network interfaces of the VPC connection",
        )
        qs_role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "ec2:CreateNetworkInterface",
                    "ec2:ModifyNetworkInterfaceAttribute",
                    "ec2:DeleteNetworkInterface",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                ],
                resources=["*"],  # EC2 authorises these on "*"; limited to this VPC below
                conditions={
                    "StringEqualsIfExists": {
                        "ec2:Vpc": f"arn:aws:ec2:{settings.region}:"
                        f"{settings.account}:vpc/{vpc.vpc_id}"
                    }
                },
            )
        )
        connection = quicksight.CfnVPCConnection(
            self,
            "ReportingVpcConnection",
            aws_account_id=settings.account,
            vpc_connection_id=f"{settings.name}-warehouse",
            name=f"{settings.name}-warehouse",
            role_arn=qs_role.role_arn,
            security_group_ids=[reporting_sg.security_group_id],
            subnet_ids=subnets,
        )
        owner = [
            quicksight.CfnDataSource.ResourcePermissionProperty(
                principal=settings.reporting.owner_arn,
                actions=[
                    "quicksight:DescribeDataSource",
                    "quicksight:DescribeDataSourcePermissions",
                    "quicksight:PassDataSource",
                    "quicksight:UpdateDataSource",
                ],
            )
        ]
        self.data_source = quicksight.CfnDataSource(
            self,
            "WarehouseDataSource",
            aws_account_id=settings.account,
            data_source_id=f"{settings.name}-warehouse",
            name="sensorpipe warehouse",
            type="REDSHIFT",
            data_source_parameters=quicksight.CfnDataSource.DataSourceParametersProperty(
                redshift_parameters=quicksight.CfnDataSource.RedshiftParametersProperty(
                    host=self.workgroup.attr_workgroup_endpoint_address,
                    port=wh.port,
                    database=wh.database,
                )
            ),
            credentials=quicksight.CfnDataSource.DataSourceCredentialsProperty(
                secret_arn=reader.secret_arn
            ),
            ssl_properties=quicksight.CfnDataSource.SslPropertiesProperty(disable_ssl=False),
            vpc_connection_properties=quicksight.CfnDataSource.VpcConnectionPropertiesProperty(
                vpc_connection_arn=connection.attr_arn
            ),
            permissions=owner,
        )
        data_set_actions = [
            "quicksight:DescribeDataSet",
            "quicksight:DescribeDataSetPermissions",
            "quicksight:PassDataSet",
            "quicksight:DescribeIngestion",
            "quicksight:ListIngestions",
        ]

        def data_set(
            id_: str, suffix: str, name: str, table: quicksight.CfnDataSet.PhysicalTableProperty
        ) -> quicksight.CfnDataSet:
            """A data set over the warehouse by direct query: no SPICE copy to go stale."""
            return quicksight.CfnDataSet(
                self,
                id_,
                aws_account_id=settings.account,
                data_set_id=f"{settings.name}-{suffix}",
                name=name,
                import_mode="DIRECT_QUERY",
                physical_table_map={suffix: table},
                permissions=[
                    quicksight.CfnDataSet.ResourcePermissionProperty(
                        principal=settings.reporting.owner_arn, actions=data_set_actions
                    )
                ],
            )

        def relational(table: Table) -> quicksight.CfnDataSet.PhysicalTableProperty:
            return quicksight.CfnDataSet.PhysicalTableProperty(
                relational_table=quicksight.CfnDataSet.RelationalTableProperty(
                    data_source_arn=self.data_source.attr_arn,
                    schema="public",
                    name=table.name,
                    input_columns=quicksight_columns(table),
                )
            )

        self.data_set = data_set(
            "DailyAggregates", "daily-aggregates", "sensor daily aggregates",
            relational(DAILY_AGGREGATES),
        )  # fmt: skip
        trend = data_set(
            "MinuteAggregates", "minute-aggregates", "sensor minute aggregates",
            relational(MINUTE_AGGREGATES),
        )  # fmt: skip
        lifecycle = data_set(
            "IncidentLifecycle",
            "incident-lifecycle",
            "incidents: opened, closed, minutes to close",
            quicksight.CfnDataSet.PhysicalTableProperty(
                custom_sql=quicksight.CfnDataSet.CustomSqlProperty(
                    data_source_arn=self.data_source.attr_arn,
                    name="incident_lifecycle",
                    sql_query=INCIDENT_LIFECYCLE_SQL,
                    columns=[
                        quicksight.CfnDataSet.InputColumnProperty(name=n, type=t)
                        for n, t in INCIDENT_LIFECYCLE_COLUMNS
                    ],
                )
            ),
        )
        # The business dashboard, and the analysis it is edited in, from one definition
        # (dashboard.py). The definition goes in as CloudFormation's own JSON: it is the
        # QuickSight API's shape, which the L1 classes would only rename.
        definition = dashboard_definition(lifecycle.attr_arn, trend.attr_arn)
        viewer = ["quicksight:DescribeDashboard", "quicksight:ListDashboardVersions",
                  "quicksight:QueryDashboard"]  # fmt: skip
        analysis = quicksight.CfnAnalysis(
            self,
            "IncidentsAnalysis",
            aws_account_id=settings.account,
            analysis_id=f"{settings.name}-incidents",
            name="sensorpipe incidents",
            permissions=[
                quicksight.CfnAnalysis.ResourcePermissionProperty(
                    principal=settings.reporting.owner_arn,
                    actions=["quicksight:DescribeAnalysis", "quicksight:QueryAnalysis",
                             "quicksight:UpdateAnalysis", "quicksight:DescribeAnalysisPermissions",
                             "quicksight:RestoreAnalysis", "quicksight:DeleteAnalysis",
                             "quicksight:UpdateAnalysisPermissions"],
                )  # fmt: skip
            ],
        )
        analysis.add_property_override("Definition", definition)
        dashboard = quicksight.CfnDashboard(
            self,
            "IncidentsDashboard",
            aws_account_id=settings.account,
            dashboard_id=f"{settings.name}-incidents",
            name="sensorpipe incidents",
            permissions=[
                quicksight.CfnDashboard.ResourcePermissionProperty(
                    principal=settings.reporting.owner_arn, actions=viewer
                )
            ],
            dashboard_publish_options=quicksight.CfnDashboard.DashboardPublishOptionsProperty(
                ad_hoc_filtering_option=quicksight.CfnDashboard.AdHocFilteringOptionProperty(
                    availability_status="DISABLED"
                ),
                export_to_csv_option=quicksight.CfnDashboard.ExportToCSVOptionProperty(
                    availability_status="ENABLED"
                ),
            ),
        )
        dashboard.add_property_override("Definition", definition)

        output(self, "WarehouseWorkgroupName", names.workgroup, "Redshift Serverless workgroup")
        output(
            self,
            "WarehouseLoaderSecretArn",
            loader.secret_arn,
            "the jobs' warehouse user (Redshift Data API secret_arn)",
        )
        output(self, "WarehouseCopyRoleArn", names.role_arn(names.warehouse_copy_role), "COPY role")
        output(self, "WarehousePort", str(wh.port), "warehouse port")
