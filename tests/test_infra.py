"""The AWS estate (infra/): the CDK app synthesised once per session, every promise of the
estate checked on the CloudFormation it produces (aws_cdk.assertions), then cfn-lint and
checkov on the templates. CloudFormation and IAM cannot run here: the templates are checked
against AWS's published contracts (cfn-lint's resource specifications, checkov's rules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "infra"))
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk.assertions import Match, Template  # noqa: E402
from sensorpipe.config import ConfigError  # noqa: E402
from sensorpipe_estate.build import STACK_ORDER, apply_checkov_skips, build_app  # noqa: E402
from sensorpipe_estate.settings import load_estate  # noqa: E402

ESTATE_YAML = ROOT / "infra/estate.yaml"
CHECKOV = ROOT / "build/checkov-venv/bin/checkov"
TRAIN_ROLES = (
    "sensorpipe-streaming-jobs",
    "sensorpipe-batch-jobs",
    "sensorpipe-iot-telemetry-rule",
)
PROTECTED_MARKERS = ("sensorpipe-protected", "alias/sensorpipe-protected", "ProtectedKey")


@pytest.fixture(scope="session")
def settings():
    return load_estate(ESTATE_YAML)


@pytest.fixture(scope="session")
def cdk_out(estate_cdk_out):
    return estate_cdk_out


@pytest.fixture(scope="session")
def templates(cdk_out):
    return {
        p.name.removesuffix(".template.json").removeprefix("sensorpipe-"): json.loads(p.read_text())
        for p in cdk_out.glob("*.template.json")
    }


def template(templates, name) -> Template:
    return Template.from_json(templates[name])


def resources(templates, kind):
    for stack, t in templates.items():
        for logical, r in t["Resources"].items():
            if r["Type"] == kind:
                yield stack, logical, r["Properties"]


def statements(templates):
    """Every policy statement of every template: IAM policies and roles, bucket, key and topic
    policies, with where it stands."""
    for stack, t in templates.items():
        for logical, r in t["Resources"].items():
            p = r.get("Properties", {})
            docs = [p.get("PolicyDocument"), p.get("KeyPolicy"), p.get("AssumeRolePolicyDocument")]
            docs += [pol.get("PolicyDocument") for pol in p.get("Policies", [])]
            for doc in docs:
                if doc:
                    for s in doc["Statement"]:
                        yield stack, logical, r, s


def as_list(value):
    return value if isinstance(value, list) else [value]


def star_on_star(statement) -> bool:
    if statement.get("Effect") != "Allow":
        return False
    actions, resources = (
        as_list(statement.get("Action", [])),
        as_list(statement.get("Resource", [])),
    )
    return any(a == "*" for a in actions) and any(r == "*" for r in resources)


def test_stacks_are_the_estates_parts_in_deployment_order(templates):
    assert set(templates) == set(STACK_ORDER)


def test_every_bucket_is_encrypted_private_versioned_and_tls_only(templates):
    buckets = list(resources(templates, "AWS::S3::Bucket"))
    assert len(buckets) == 7  # lake, protected, trail, access logs; DR: 2 replicas, access logs
    for stack, logical, props in buckets:
        rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        algorithm = rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
        if logical.startswith("AccessLogs"):
            assert algorithm == "AES256", "S3 log delivery needs SSE-S3 on its target"
        else:
            assert (
                algorithm == "aws:kms" and rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]
            )
            assert rule["BucketKeyEnabled"] is True
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        if not logical.startswith("AccessLogs"):
            assert props["LoggingConfiguration"]["DestinationBucketName"]
        policy = [
            r["Properties"]
            for r in templates[stack]["Resources"].values()
            if r["Type"] == "AWS::S3::BucketPolicy"
            and r["Properties"]["Bucket"] == {"Ref": logical}
        ]
        assert len(policy) == 1, f"{stack}/{logical} has no bucket policy"
        tls = [
            s
            for s in policy[0]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny"
            and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert tls and tls[0]["Action"] == "s3:*", f"{stack}/{logical}: no TLS-only deny"


def test_kms_buckets_refuse_other_encryption_and_other_keys(templates):
    for _, _, props in resources(templates, "AWS::S3::BucketPolicy"):
        sids = {s.get("Sid"): s for s in props["PolicyDocument"]["Statement"]}
        if "AccessLogs" in props["Bucket"]["Ref"]:
            continue
        assert sids["DenyOtherEncryption"]["Condition"]["StringNotEquals"] == {
            "s3:x-amz-server-side-encryption": "aws:kms"
        }
        assert (
            "s3:x-amz-server-side-encryption-aws-kms-key-id"
            in sids["DenyOtherKmsKey"]["Condition"]["StringNotEquals"]
        )
        assert sids["DenyCustomerProvidedKeys"]["Effect"] == "Deny"


def test_lake_and_protected_zone_replicate_to_the_dr_region_under_its_keys(templates, settings):
    storage = templates["keys-storage"]["Resources"]
    for logical, target, alias in (
        ("Lake", "lake-dr", "lake-dr"),
        ("Protected", "protected-dr", "protected-dr"),
    ):
        (props,) = [
            r["Properties"]
            for k, r in storage.items()
            if r["Type"] == "AWS::S3::Bucket" and k.startswith(logical) and "Policy" not in k
        ]
        (rule,) = props["ReplicationConfiguration"]["Rules"]
        assert rule["Status"] == "Enabled"
        dest = rule["Destination"]
        assert (
            dest["Bucket"]
            == f"arn:aws:s3:::sensorpipe-{target}-{settings.account}-{settings.dr_region}"
        )
        assert dest["EncryptionConfiguration"]["ReplicaKmsKeyID"] == (
            f"arn:aws:kms:{settings.dr_region}:{settings.account}:alias/sensorpipe-{alias}"
        )
        assert rule["SourceSelectionCriteria"]["SseKmsEncryptedObjects"]["Status"] == "Enabled"
        assert rule["DeleteMarkerReplication"]["Status"] == "Enabled"
        (archive,) = props["LifecycleConfiguration"]["Rules"]
        classes = [t["StorageClass"] for t in archive["Transitions"]]
        assert classes == ["STANDARD_IA", "GLACIER_IR"]
        assert archive["NoncurrentVersionExpiration"]["NoncurrentDays"] == 90
        assert archive["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 7
    dr = template(templates, "dr")
    dr.has_resource_properties("AWS::KMS::Alias", {"AliasName": "alias/sensorpipe-protected-dr"})
    dr.has_resource_properties("AWS::KMS::Alias", {"AliasName": "alias/sensorpipe-lake-dr"})
    dr.resource_count_is("AWS::KMS::Key", 2)


def test_protected_key_admits_the_hospital_role_and_no_train_role(templates, settings):
    storage = templates["keys-storage"]["Resources"]
    (key,) = [
        r["Properties"]
        for k, r in storage.items()
        if k.startswith("ProtectedKey") and r["Type"] == "AWS::KMS::Key"
    ]
    policy = json.dumps(key["KeyPolicy"])
    assert f"arn:aws:iam::{settings.account}:role/sensorpipe-hospital-jobs" in policy
    for role in TRAIN_ROLES:
        assert role not in policy
    # The account may administer the protected key but not use it (no IAM delegation).
    for s in key["KeyPolicy"]["Statement"]:
        if ":root" in json.dumps(s.get("Principal")):
            assert not {"kms:Decrypt", "kms:*", "kms:Encrypt", "kms:GenerateDataKey*"} & set(
                as_list(s["Action"])
            )
    assert key["EnableKeyRotation"] is True


def test_streams_use_customer_managed_keys(templates):
    streams = list(resources(templates, "AWS::Kinesis::Stream"))
    assert {p["Name"] for _, _, p in streams} == {"train-telemetry", "hospital-devices"}
    for _, _, props in streams:
        enc = props["StreamEncryption"]
        assert enc["EncryptionType"] == "KMS"
        assert "Fn::ImportValue" in enc["KeyId"], "not a customer key from the keys stack"
    hospital = [p for _, _, p in streams if p["Name"] == "hospital-devices"][0]
    assert "ProtectedKey" in hospital["StreamEncryption"]["KeyId"]["Fn::ImportValue"]


def test_iot_rule_puts_each_reading_on_the_stream_keyed_by_train(templates):
    t = template(templates, "streams-iot")
    t.has_resource_properties(
        "AWS::IoT::TopicRule",
        {
            "TopicRulePayload": {
                "Sql": "SELECT * FROM 'trains/+/telemetry'",
                "Actions": [
                    {"Kinesis": {"PartitionKey": "${topic(2)}", "StreamName": Match.any_value()}}
                ],
                "ErrorAction": {"CloudwatchLogs": Match.any_value()},
            }
        },
    )


def test_iot_policy_scopes_publish_and_shadow_to_the_things_own_name(templates):
    ((_, _, props),) = resources(templates, "AWS::IoT::Policy")
    thing = "${iot:Connection.Thing.ThingName}"
    for s in props["PolicyDocument"]["Statement"]:
        for resource in as_list(s["Resource"]):
            assert thing in resource, f"{s['Sid']}: {resource} is not scoped to the thing's name"
            assert not resource.endswith("/*/telemetry") and "+" not in resource
    actions = {a for s in props["PolicyDocument"]["Statement"] for a in as_list(s["Action"])}
    assert actions == {
        "iot:Connect",
        "iot:Publish",
        "iot:Subscribe",
        "iot:Receive",
        "iot:GetThingShadow",
        "iot:UpdateThingShadow",
    }


def test_warehouse_is_private_on_a_non_default_port_with_tls_and_enhanced_vpc_routing(
    templates, settings
):
    t = template(templates, "warehouse-reporting")
    t.has_resource_properties(
        "AWS::RedshiftServerless::Workgroup",
        {
            "PubliclyAccessible": False,
            "EnhancedVpcRouting": True,
            "Port": 5440,
            "ConfigParameters": Match.array_with(
                [{"ParameterKey": "require_ssl", "ParameterValue": "true"}]
            ),
        },
    )
    t.has_resource_properties(
        "AWS::RedshiftServerless::Namespace",
        {
            "ManageAdminPassword": True,
            "KmsKeyId": Match.any_value(),
            "LogExports": ["userlog", "connectionlog", "useractivitylog"],
        },
    )
    ((_, _, wg),) = resources(templates, "AWS::RedshiftServerless::Workgroup")
    assert wg["Port"] != 5439
    for _, logical, sg in resources(templates, "AWS::EC2::SecurityGroup"):
        for rule in sg.get("SecurityGroupIngress", []):
            assert rule.get("CidrIp") != "0.0.0.0/0", logical
    ingress = [p for _, _, p in resources(templates, "AWS::EC2::SecurityGroupIngress")]
    to_warehouse = [p for p in ingress if p.get("FromPort") == 5440]
    assert to_warehouse and all("SourceSecurityGroupId" in p for p in to_warehouse)
    (wsg,) = [
        p
        for _, logical, p in resources(templates, "AWS::EC2::SecurityGroup")
        if logical.startswith("WarehouseSg")
    ]
    assert [r["CidrIp"] for r in wsg["SecurityGroupIngress"]] == [settings.network.corporate_cidr]


def test_quicksight_sits_in_the_warehouses_region(templates, settings, tmp_path):
    t = template(templates, "warehouse-reporting")
    t.resource_count_is("AWS::QuickSight::DataSource", 1)
    t.has_resource_properties("AWS::QuickSight::DataSet", {"ImportMode": "DIRECT_QUERY"})
    assert settings.reporting.region == settings.region
    text = ESTATE_YAML.read_text().replace(
        "  region: ${SENSORPIPE_REGION:-eu-west-1}\n  owner_arn", "  region: us-east-1\n  owner_arn"
    )
    assert text != ESTATE_YAML.read_text()
    (tmp_path / "estate.yaml").write_text(text)
    with pytest.raises(ConfigError, match="reporting.region"):
        load_estate(tmp_path / "estate.yaml")


def test_network_has_no_route_to_the_internet_and_the_endpoints_the_jobs_use(templates):
    t = template(templates, "network")
    t.resource_count_is("AWS::EC2::InternetGateway", 0)
    t.resource_count_is("AWS::EC2::NatGateway", 0)
    t.resource_count_is("AWS::EC2::FlowLog", 1)
    services = json.dumps(
        [p["ServiceName"] for _, _, p in resources(templates, "AWS::EC2::VPCEndpoint")]
    )
    for service in (
        "s3",
        "kinesis-streams",
        "kms",
        "secretsmanager",
        "sts",
        "logs",
        "monitoring",
        "elasticmapreduce",
        "glue",
        "redshift-data",
        "iot.data",
    ):
        assert f".{service}" in services, service


def test_cloudtrail_records_data_events_with_file_validation(templates):
    t = template(templates, "keys-storage")
    t.has_resource_properties(
        "AWS::CloudTrail::Trail",
        {
            "EnableLogFileValidation": True,
            "IsMultiRegionTrail": True,
            "KMSKeyId": Match.any_value(),
            "EventSelectors": [
                Match.object_like(
                    {
                        "DataResources": [
                            Match.object_like(
                                {"Type": "AWS::S3::Object", "Values": Match.any_value()}
                            )
                        ]
                    }
                )
            ],
        },
    )
    ((_, _, trail),) = resources(templates, "AWS::CloudTrail::Trail")
    values = json.dumps(trail["EventSelectors"][0]["DataResources"][0]["Values"])
    assert "Lake" in values and "Protected" in values


JOB_ALARMS = ("LakeCommitLag", "UnscoredReadings", "ResidentStoreErrors",
              "WarehouseLoadFailures", "AlertDeadLetters")  # fmt: skip
ALARMS = (
    "TelemetryConsumerLag",
    "HospitalConsumerLag",
    "TelemetryWriteThrottling",
    "HospitalWriteThrottling",
    *(f"{job}{a}" for job in ("Sensorpipe", "SensorpipeHospital") for a in JOB_ALARMS),
    "WarehouseConnections",
    "WarehouseQueryDuration",
    "WarehouseStorage",
    "IotRuleFailures",
)


def test_every_alarm_exists_and_notifies_the_topic(templates):
    t = template(templates, "monitoring")
    alarms = {p["AlarmName"]: p for _, _, p in resources(templates, "AWS::CloudWatch::Alarm")}
    assert set(alarms) == {f"sensorpipe-{a}" for a in ALARMS}
    (topic,) = [
        k for k, r in templates["monitoring"]["Resources"].items() if r["Type"] == "AWS::SNS::Topic"
    ]
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": topic}], name
    assert alarms["sensorpipe-SensorpipeLakeCommitLag"]["TreatMissingData"] == "breaching"
    assert (
        alarms["sensorpipe-TelemetryConsumerLag"]["MetricName"]
        == "GetRecords.IteratorAgeMilliseconds"
    )
    t.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.emr"],
                "detail-type": ["EMR Step Status Change"],
                "detail": {"state": ["FAILED"]},
            },
            "Targets": [Match.object_like({"Arn": {"Ref": topic}})],
        },
    )
    t.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})


def test_the_topic_policy_admits_the_alarms_that_notify_it(templates):
    """`enforce_ssl` writes a topic policy, and a topic with a policy takes publishes only from
    whom it names: every alarm's action is this topic, so the policy must admit CloudWatch
    alarms of this account (and EventBridge for the step-failure rule), over TLS."""
    resources_ = templates["monitoring"]["Resources"]
    (policy,) = [r["Properties"] for r in resources_.values()
                 if r["Type"] == "AWS::SNS::TopicPolicy"]  # fmt: skip
    statements = policy["PolicyDocument"]["Statement"]
    alarms = [p for _, _, p in resources(templates, "AWS::CloudWatch::Alarm")]
    assert alarms

    def admits(service: str, source_arn: str) -> bool:
        from sensorpipe_tools.policy_eval import condition_holds

        for s in statements:
            if (s["Effect"] == "Allow" and "sns:Publish" in as_list(s["Action"])
                    and service in as_list(s.get("Principal", {}).get("Service", []))):
                context = {"aws:SourceAccount": "123456789012", "aws:SourceArn": source_arn}
                if all(condition_holds(op, k, v, context)
                       for op, kv in s.get("Condition", {}).items() for k, v in kv.items()):
                    return True
        return False  # fmt: skip

    for alarm in alarms:
        arn = f"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{alarm['AlarmName']}"
        assert admits("cloudwatch.amazonaws.com", arn), alarm["AlarmName"]
    assert admits("events.amazonaws.com", "arn:aws:events:eu-west-1:123456789012:rule/x")
    assert not admits("cloudwatch.amazonaws.com",
                      "arn:aws:cloudwatch:eu-west-1:999999999999:alarm:other")  # fmt: skip
    insecure = {"Bool": {"aws:SecureTransport": "false"}}
    assert any(s["Effect"] == "Deny" and s["Condition"] == insecure
               for s in statements)  # fmt: skip


def test_each_job_alarm_watches_the_metric_and_dimension_the_job_publishes(templates):
    """The streaming jobs publish with Job=<stream.query_prefix> (lib/sensorpipe/metrics.py):
    an alarm per job and metric, on exactly that metric, namespace and dimension."""
    from sensorpipe.config import load_settings
    from sensorpipe.metrics import JOB_DIMENSION

    from tests.test_config import EMR_ENV

    env = {**EMR_ENV, "SENSORPIPE_PROTECTED_BUCKET": "p"}
    jobs = {load_settings(ROOT / "conf" / c, environ=env).stream.query_prefix
            for c in ("emr.yaml", "hospital-stream-emr.yaml")}  # fmt: skip
    metric_names = {"LakeCommitLag": "LakeCommitLagSeconds"}
    found = {}
    for _, _, p in resources(templates, "AWS::CloudWatch::Alarm"):
        if p.get("Namespace") != "sensorpipe":
            continue
        (dimension,) = p["Dimensions"]
        assert dimension["Name"] == JOB_DIMENSION
        found.setdefault(dimension["Value"], set()).add(p["MetricName"])
    assert set(found) == jobs
    for job, names in found.items():
        assert names == {metric_names.get(a, a) for a in JOB_ALARMS}, job


def test_the_warehouse_has_alarms_on_its_own_metrics(templates):
    alarms = {p["AlarmName"]: p for _, _, p in resources(templates, "AWS::CloudWatch::Alarm")}
    workgroup = next(p for _, _, p in resources(templates, "AWS::RedshiftServerless::Workgroup"))
    for name, metric in (("WarehouseConnections", "DatabaseConnections"),
                         ("WarehouseQueryDuration", "QueryDuration")):  # fmt: skip
        alarm = alarms[f"sensorpipe-{name}"]
        assert alarm["Namespace"] == "AWS/Redshift-Serverless" and alarm["MetricName"] == metric
        dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert dims["Workgroup"] == workgroup["WorkgroupName"]
    storage = alarms["sensorpipe-WarehouseStorage"]
    namespace = next(p for _, _, p in resources(templates, "AWS::RedshiftServerless::Namespace"))
    assert storage["Dimensions"] == [{"Name": "Namespace", "Value": namespace["NamespaceName"]}]


def test_star_on_star_check_catches_a_planted_grant():
    assert star_on_star({"Effect": "Allow", "Action": "*", "Resource": "*"})
    assert star_on_star({"Effect": "Allow", "Action": ["s3:GetObject", "*"], "Resource": ["*"]})
    assert not star_on_star({"Effect": "Deny", "Action": "*", "Resource": "*"})
    assert not star_on_star({"Effect": "Allow", "Action": "kms:*", "Resource": "*"})


def test_no_policy_grants_every_action_on_every_resource(templates):
    offenders = [
        (stack, logical, s.get("Sid"))
        for stack, logical, _, s in statements(templates)
        if star_on_star(s)
    ]
    assert offenders == []


def train_role_statements(templates):
    roles = {
        logical: r["Properties"].get("RoleName")
        for _, t in templates.items()
        for logical, r in t["Resources"].items()
        if r["Type"] == "AWS::IAM::Role"
    }
    assert set(TRAIN_ROLES) <= set(roles.values())
    for _, logical, r, s in statements(templates):
        if r["Type"] == "AWS::IAM::Policy":
            names = {roles.get(ref["Ref"]) for ref in r["Properties"]["Roles"]}
            if names & set(TRAIN_ROLES):
                yield logical, s


def test_train_roles_get_nothing_on_the_protected_bucket_or_key(templates, cdk_out, settings):
    """Evaluated, not searched for names (a grant of s3:GetObject on "*" named no protected
    marker and passed the old scan: issue 30's test audit): every train role is denied reading
    and writing the protected bucket and using its key, through every policy of the estate."""
    from sensorpipe_tools.access_contract import Access, load_estate

    found = list(train_role_statements(templates))
    assert len(found) > 5
    for logical, s in found:  # and still no statement names the zone
        text = json.dumps(s)
        assert not any(m in text for m in PROTECTED_MARKERS), f"{logical}: {text}"
    estate = load_estate(cdk_out, settings.account, settings.region)
    protected = f"sensorpipe-protected-{settings.account}-{settings.region}"
    _, key = estate.bucket(protected)
    obj = f"arn:aws:s3:::{protected}/hospital/patients/part-0.parquet"
    via_s3 = (("kms:ViaService", f"s3.{settings.region}.amazonaws.com"),)
    for role in TRAIN_ROLES:
        arn = f"arn:aws:iam::{settings.account}:role/{role}"
        for access in (Access("s3:GetObject", obj), Access("s3:PutObject", obj),
                       Access("kms:Decrypt", key, via_s3),
                       Access("kms:GenerateDataKey", key, via_s3)):  # fmt: skip
            assert not estate.decide(arn, access).allowed, (role, access.action)
    # The evaluation can fail: the same role with a planted s3:GetObject on "*" may read it.
    planted = Access("s3:GetObject", obj)
    estate.role_statements = lambda _arn: [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]
    assert estate.decide(f"arn:aws:iam::{settings.account}:role/{TRAIN_ROLES[0]}",
                         planted).allowed  # fmt: skip


def test_hospital_role_reaches_the_protected_zone(templates):
    text = json.dumps(templates["access"])
    assert "arn:aws:s3:::sensorpipe-protected-123456789012-eu-west-1" in text
    assert "alias/sensorpipe-protected" in text


def test_emr_service_role_may_read_the_metastore_password_secret_only(templates):
    """EMR resolves spark-hive-site's EMR.secret@ ARN with the service role."""
    found = [
        s for _, logical, _, s in statements({"access": templates["access"]})
        if "EmrServiceRole" in logical and "secretsmanager:GetSecretValue" in as_list(s["Action"])
    ]  # fmt: skip
    assert len(found) == 1
    (resource,) = as_list(found[0]["Resource"])
    assert resource.endswith(":secret:sensorpipe/metastore*")


def test_bad_estate_settings_fail_naming_the_field(tmp_path):
    text = ESTATE_YAML.read_text().replace("${SENSORPIPE_ACCOUNT:-123456789012}", "12345")
    (tmp_path / "estate.yaml").write_text(text)
    with pytest.raises(ConfigError, match="^account: expected a 12-digit"):
        load_estate(tmp_path / "estate.yaml")
    text = ESTATE_YAML.read_text().replace("port: 5440", "port: 5439")
    (tmp_path / "estate.yaml").write_text(text)
    with pytest.raises(ConfigError, match="warehouse.port"):
        load_estate(tmp_path / "estate.yaml")


@pytest.mark.slow
def test_cfn_lint_finds_no_error_in_any_template(cdk_out):
    files = sorted(str(p) for p in cdk_out.glob("*.template.json"))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", *files],
        capture_output=True,
        text=True,
    )
    # parseable: file:line:column:end line:end column:rule:message; E rules are errors
    errors = [
        line
        for line in result.stdout.splitlines()
        if line.split(":")[5:6] >= ["E"] and line.split(":")[5].startswith("E")
    ]
    assert not errors and result.returncode & 2 == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_checkov_fails_no_check_and_every_skip_is_listed_with_its_reason(cdk_out, settings):
    assert CHECKOV.exists(), f"{CHECKOV} missing: `make test` creates it (make checkov-venv)"
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(cdk_out),
            "--framework",
            "cloudformation",
            "--compact",
            "--skip-download",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    report = json.loads(result.stdout)
    assert report["summary"]["parsing_errors"] == 0 and report["summary"]["passed"] > 100
    failed = [(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]]
    assert failed == []
    skipped = {
        (s["check_id"], s["resource"].split(".")[-1]) for s in report["results"]["skipped_checks"]
    }
    assert skipped and all(s[1].startswith("AccessLogs") for s in skipped)
    from aws_cdk import App

    matched = apply_checkov_skips(App())  # an empty app: every skip then matches nothing
    assert all(not hits for hits in matched.values())
    matched = apply_checkov_skips(build_app(settings))
    assert all(hits for hits in matched.values()), f"a skip matches no resource: {matched}"


def test_every_estate_output_the_deploy_reads_is_an_output_of_the_estate(templates):
    """conf/deploy.yaml's ${Name} references are the estate's CloudFormation outputs (the
    deploy reads them with DescribeStacks or from `cdk deploy --outputs-file`): each must be an
    output of a synthesised stack, as must every output the deploy tests stand in for. The IoT
    data endpoint is no CloudFormation attribute: the deploy asks IoT for it."""
    import re

    from tests.test_emr_deploy import OUTPUTS

    text = "\n".join(line.split("#", 1)[0] for line in
                     (ROOT / "conf/deploy.yaml").read_text().splitlines())  # fmt: skip
    read = {name for name in re.findall(r"\$\{([A-Z][A-Za-z0-9]+)(?::-[^}]*)?\}", text)
            if not name.isupper()}  # fmt: skip
    produced = {key for t in templates.values() for key in t.get("Outputs", {})}
    assert read - produced == {"IotDataEndpoint"}
    assert set(OUTPUTS) - produced == set()
    assert {"StreamingJobsRoleArn", "BatchJobsRoleArn", "HospitalJobsRoleArn",
            "EmrPrimarySecurityGroupId", "HospitalStreamName"} <= read  # fmt: skip


def test_the_instance_profile_holds_what_emr_and_the_nodes_need_and_no_jobs_data(templates):
    """With runtime roles a step cannot use the instance profile ("Runtime roles for Amazon EMR
    steps"); what remains on it is the nodes' own: the artifacts and TLS certificates read, the
    logs written, the local-disk and lake keys (artifacts and logs are under the lake key), and
    assuming the three runtime roles. No stream, no data prefix, no secret, no shadow."""
    found = [
        s for _, logical, _, s in statements({"access": templates["access"]})
        if logical.startswith("EmrInstanceRole") and "Policy" in logical
    ]  # fmt: skip
    assert found
    actions = {a for s in found for a in as_list(s["Action"])}
    assert {a.split(":")[0] for a in actions} == {"s3", "kms", "sts"}
    s3 = {r if isinstance(r, str) else json.dumps(r) for s in found for r in as_list(s["Resource"])
          if any(a.startswith("s3:") for a in as_list(s["Action"]))}  # fmt: skip
    objects = {r.split("/", 1)[1] for r in s3 if r.startswith("arn:aws:s3:::") and "/" in r}
    assert objects == {"sensorpipe/artifacts/*", "sensorpipe/tls/*", "emr-logs/*"}
    assumed = {r for s in found if "sts:AssumeRole" in as_list(s["Action"])
               for r in as_list(s["Resource"])}  # fmt: skip
    assert {json.dumps(r).split("role/")[1].split('"')[0] for r in assumed} == {
        "sensorpipe-streaming-jobs", "sensorpipe-batch-jobs", "sensorpipe-hospital-jobs"
    }  # fmt: skip
    text = json.dumps(found)
    for absent in ("kinesis", "secretsmanager", "iot:", "redshift", "protected", "lake/",
                   "checkpoints/"):  # fmt: skip
        assert absent not in text, absent


def _network(settings_env: dict[str, str], tmp_path) -> dict:
    """The network stack synthesised with these environment settings of infra/estate.yaml."""
    from sensorpipe.config import load_settings
    from sensorpipe_estate.settings import EstateSettings

    estate = load_settings(ESTATE_YAML, environ=settings_env, kind=EstateSettings)
    build_app(estate, outdir=str(tmp_path)).synth()
    return json.loads((tmp_path / "sensorpipe-network.template.json").read_text())


def _routes(network: dict) -> list[dict]:
    return [r["Properties"] for r in network["Resources"].values()
            if r["Type"] == "AWS::EC2::Route"]  # fmt: skip


def test_the_private_subnets_route_the_corporate_ranges_over_direct_connect(templates, settings):
    """The default path: a virtual private gateway attached to the VPC (the network team
    associates it with its Direct Connect gateway), and a route for every corporate range in
    every private route table to it; nothing else leaves the VPC."""
    network = templates["network"]["Resources"]
    (gateway,) = [k for k, r in network.items() if r["Type"] == "AWS::EC2::VPNGateway"]
    assert any(r["Type"] == "AWS::EC2::VPCGatewayAttachment"
               and r["Properties"]["VpnGatewayId"] == {"Ref": gateway} for r in network.values())
    tables = {json.dumps(r["Properties"]["RouteTableId"]) for r in network.values()
              if r["Type"] == "AWS::EC2::SubnetRouteTableAssociation"}  # fmt: skip
    routes = _routes(templates["network"])
    cidrs = settings.network.on_premises.cidrs
    assert len(tables) == 3 and cidrs
    assert {(json.dumps(r["RouteTableId"]), r["DestinationCidrBlock"]) for r in routes} == {
        (t, c) for t in tables for c in cidrs}  # fmt: skip
    assert all(r["GatewayId"] == {"Ref": gateway} for r in routes)
    assert not [r for r in network.values() if r["Type"] in
                ("AWS::EC2::InternetGateway", "AWS::EC2::NatGateway")]  # fmt: skip


def test_the_corporate_domain_is_forwarded_to_the_corporate_dns_servers(templates, settings):
    onprem = settings.network.on_premises
    t = template(templates, "network")
    t.has_resource_properties("AWS::Route53Resolver::ResolverEndpoint", {"Direction": "OUTBOUND"})
    t.has_resource_properties("AWS::Route53Resolver::ResolverRule", {
        "DomainName": onprem.dns_domain, "RuleType": "FORWARD",
        "TargetIps": [{"Ip": ip, "Port": "53"} for ip in onprem.dns_servers]})
    t.resource_count_is("AWS::Route53Resolver::ResolverRuleAssociation", 1)
    (endpoint,) = [r["Properties"] for r in templates["network"]["Resources"].values()
                   if r["Type"] == "AWS::Route53Resolver::ResolverEndpoint"]
    assert len(endpoint["IpAddresses"]) == 2  # two subnets, two zones


def test_the_jobs_reach_the_hospital_database_and_the_kdcs_and_no_more(templates, settings):
    onprem = settings.network.on_premises
    groups = {r["Properties"]["GroupDescription"]: r["Properties"]
              for r in templates["network"]["Resources"].values()
              if r["Type"] == "AWS::EC2::SecurityGroup"}  # fmt: skip
    egress = next(g for d, g in groups.items() if d.startswith("EMR nodes to the hospital"))
    assert {(e["IpProtocol"], e["FromPort"], e["ToPort"], e["CidrIp"])
            for e in egress["SecurityGroupEgress"]} == {
        ("tcp", onprem.hospital_db_port, onprem.hospital_db_port, onprem.hospital_db_cidr),
        ("tcp", 88, 88, onprem.kdc_cidr), ("udp", 88, 88, onprem.kdc_cidr)}  # fmt: skip
    kdc = next(g for d, g in groups.items() if d.startswith("the cluster KDC"))
    assert {(i["IpProtocol"], i["FromPort"], i["CidrIp"]) for i in kdc["SecurityGroupIngress"]} \
        == {(p, 88, c) for p in ("tcp", "udp") for c in onprem.cidrs}
    # The deploy passes both to the clusters (conf/deploy.yaml, tests/test_emr_deploy.py).
    outputs = templates["network"]["Outputs"]
    assert {"EmrOnPremisesSecurityGroupId", "EmrKdcFromCorporateSecurityGroupId"} <= set(outputs)


def test_a_transit_gateway_or_a_vpn_is_a_setting(tmp_path):
    tgw = _network({"SENSORPIPE_ONPREM_KIND": "transit-gateway",
                    "SENSORPIPE_TRANSIT_GATEWAY_ID": "tgw-0123456789abcdef0"}, tmp_path / "t")
    kinds = {r["Type"] for r in tgw["Resources"].values()}
    assert "AWS::EC2::TransitGatewayAttachment" in kinds and "AWS::EC2::VPNGateway" not in kinds
    assert {r["TransitGatewayId"] for r in _routes(tgw)} == {"tgw-0123456789abcdef0"}
    vpn = _network({"SENSORPIPE_ONPREM_KIND": "vpn",
                    "SENSORPIPE_CUSTOMER_GATEWAY_IP": "198.51.100.7"}, tmp_path / "v")
    resources_ = [r for r in vpn["Resources"].values()]
    (customer,) = [r["Properties"] for r in resources_ if r["Type"] == "AWS::EC2::CustomerGateway"]
    assert customer["IpAddress"] == "198.51.100.7"
    assert any(r["Type"] == "AWS::EC2::VPNConnection" for r in resources_)


def test_the_on_premises_path_refuses_what_cannot_be_routed(tmp_path):
    from sensorpipe.config import load_settings
    from sensorpipe_estate.settings import EstateSettings

    def load(**env: str):
        return load_settings(ESTATE_YAML, environ=env, kind=EstateSettings)

    with pytest.raises(ConfigError, match="^network.on_premises.transit_gateway_id: a transit"):
        load(SENSORPIPE_ONPREM_KIND="transit-gateway")
    with pytest.raises(ConfigError, match="^network.on_premises.customer_gateway_ip: expected"):
        load(SENSORPIPE_ONPREM_KIND="vpn")
    with pytest.raises(ConfigError, match="overlaps the VPC's 10.40.0.0/16"):
        load(SENSORPIPE_CORPORATE_CIDR="10.0.0.0/8")


def _principal_permissions(templates, stack):
    return [r["Properties"] for r in templates[stack]["Resources"].values()
            if r["Type"] == "AWS::LakeFormation::PrincipalPermissions"]  # fmt: skip


def test_the_lake_and_the_protected_zone_are_registered_with_lake_formation(templates, settings):
    """Registered in hybrid mode with the estate's data access role (which the protected key
    admits for Decrypt via S3): the jobs keep writing with their runtime roles, readers read
    through Lake Formation's grants."""
    registered = {p["ResourceArn"]: p for _, _, p in
                  resources({"g": templates["governance"]}, "AWS::LakeFormation::Resource")}
    lake = f"arn:aws:s3:::sensorpipe-lake-{settings.account}-{settings.region}"
    protected = f"arn:aws:s3:::sensorpipe-protected-{settings.account}-{settings.region}"
    assert set(registered) == {f"{lake}/lake", f"{lake}/hospital-general", f"{protected}/hospital"}
    for p in registered.values():
        assert p["RoleArn"].endswith(":role/sensorpipe-lakeformation-data-access")
        assert p["HybridAccessEnabled"] is True and p["UseServiceLinkedRole"] is False
    databases = {p["DatabaseInput"]["Name"] for _, _, p in
                 resources({"g": templates["governance"]}, "AWS::Glue::Database")}
    assert databases == {"sensorpipe", "sensorpipe_phi"}
    key = next(r["Properties"] for k, r in templates["keys-storage"]["Resources"].items()
               if k.startswith("ProtectedKey") and r["Type"] == "AWS::KMS::Key")
    (lf_use,) = [s for s in key["KeyPolicy"]["Statement"]
                 if "lakeformation-data-access" in json.dumps(s.get("Principal"))]
    assert as_list(lf_use["Action"]) == ["kms:Decrypt"]
    assert lf_use["Condition"]["StringEquals"]["kms:ViaService"].startswith("s3.")


def test_readers_get_the_lake_and_general_zone_and_never_the_protected_one(templates, settings):
    gov = settings.governance
    grants = _principal_permissions(templates, "governance")
    readers = {gov.engineers_role_arn, gov.data_scientists_role_arn, gov.analysts_role_arn}
    for reader in readers:
        mine = [g for g in grants if g["Principal"]["DataLakePrincipalIdentifier"] == reader]
        assert mine, reader
        text = json.dumps(mine)
        assert "sensorpipe_phi" not in text and "DATA_LOCATION_ACCESS" not in text
        tables = [g for g in mine if "Table" in g["Resource"]]
        assert [(g["Resource"]["Table"]["DatabaseName"], sorted(g["Permissions"]))
                for g in tables] == [("sensorpipe", ["DESCRIBE", "SELECT"])]  # fmt: skip
    # Nobody gets SELECT on the protected tables outright: clinicians read them through the
    # data cells filters only.
    for g in grants:
        table = g["Resource"].get("Table", {})
        assert not (table.get("DatabaseName") == "sensorpipe_phi" and "SELECT" in g["Permissions"])


def test_the_data_cells_filters_and_their_grants_are_the_estates(templates, settings):
    """conf/lakeformation/data-cells-filters.json, the reviewed specification (validated
    against botocore's lakeformation model in tests/test_access_policies.py), is what the
    governance-filters stack creates: same filters, same rows, SSN excluded, same grants."""
    spec = json.loads((ROOT / "conf/lakeformation/data-cells-filters.json").read_text()
                      .replace("{{ACCOUNT_ID}}", settings.account))  # fmt: skip
    filters = resources({"f": templates["governance-filters"]},
                        "AWS::LakeFormation::DataCellsFilter")  # fmt: skip
    made = {p["Name"]: p for _, _, p in filters}
    assert set(made) == {f["Name"] for f in spec["CreateDataCellsFilter"]}
    for f in spec["CreateDataCellsFilter"]:
        m = made[f["Name"]]
        assert (m["DatabaseName"], m["TableName"]) == (f["DatabaseName"], f["TableName"])
        assert m["RowFilter"] == f["RowFilter"] and m["ColumnWildcard"] == f["ColumnWildcard"]
        if f["TableName"] == "patient_profile":
            assert m["ColumnWildcard"]["ExcludedColumnNames"] == ["ssn"]
    granted = {(g["Principal"]["DataLakePrincipalIdentifier"],
                g["Resource"]["DataCellsFilter"]["Name"], tuple(g["Permissions"]))
               for g in _principal_permissions(templates, "governance-filters")}  # fmt: skip
    assert granted == {(g["Principal"]["DataLakePrincipalIdentifier"],
                        g["Resource"]["DataCellsFilter"]["Name"], tuple(g["Permissions"]))
                       for g in spec["GrantPermissions"]}  # fmt: skip


def test_the_jobs_runtime_roles_may_create_tables_where_they_write(templates):
    grants = _principal_permissions(templates, "governance")
    by_role: dict[str, set] = {}
    for g in grants:
        who = g["Principal"]["DataLakePrincipalIdentifier"].rsplit("/", 1)[-1]
        where = g["Resource"].get("Database", {}).get("Name") or g["Resource"].get(
            "DataLocation", {}).get("ResourceArn", "").rsplit("/", 1)[-1]  # fmt: skip
        by_role.setdefault(who, set()).add((where, tuple(sorted(g["Permissions"]))))
    write = ("ALTER", "CREATE_TABLE", "DESCRIBE")
    assert by_role["sensorpipe-streaming-jobs"] == {("sensorpipe", write),
                                                     ("lake", ("DATA_LOCATION_ACCESS",))}
    assert by_role["sensorpipe-batch-jobs"] == by_role["sensorpipe-streaming-jobs"]
    assert by_role["sensorpipe-hospital-jobs"] == {
        ("sensorpipe_phi", write), ("sensorpipe", write),
        ("hospital", ("DATA_LOCATION_ACCESS",)), ("hospital-general", ("DATA_LOCATION_ACCESS",))}


def _groups(templates, stack):
    return {r["Properties"]["GroupDescription"]: (k, r["Properties"])
            for k, r in templates[stack]["Resources"].items()
            if r["Type"] == "AWS::EC2::SecurityGroup"}  # fmt: skip


def _ingress(templates, stack, group_logical):
    """Inline and separate ingress rules of a group, as (source group logical id, from, to)."""
    found = []
    for r in templates[stack]["Resources"].values():
        p = r.get("Properties", {})
        if r["Type"] == "AWS::EC2::SecurityGroupIngress" and (
                p.get("GroupId") == {"Fn::GetAtt": [group_logical, "GroupId"]}):
            source = p.get("SourceSecurityGroupId", {}).get("Fn::GetAtt", [None])[0]
            found.append((source, p["FromPort"], p["ToPort"]))
    return found


def test_quicksight_takes_the_warehouses_replies_its_interfaces_not_being_stateful(templates):
    groups = _groups(templates, "warehouse-reporting")
    reporting, _ = groups["QuickSight VPC connection to the warehouse"]
    warehouse, _ = next(v for d, v in groups.items() if d.startswith("Redshift Serverless"))
    assert (warehouse, 0, 65535) in _ingress(templates, "warehouse-reporting", reporting)


def test_the_warehouse_reaches_s3s_gateway_endpoint_for_copy(templates, settings):
    """Enhanced VPC routing sends COPY through the VPC: the warehouse's group, which allowed no
    egress at all, must allow HTTPS to the region's S3 prefix list."""
    warehouse, props = next(v for d, v in _groups(templates, "warehouse-reporting").items()
                            if d.startswith("Redshift Serverless"))  # fmt: skip
    egress = [r["Properties"] for r in templates["warehouse-reporting"]["Resources"].values()
              if r["Type"] == "AWS::EC2::SecurityGroupEgress"
              and r["Properties"]["GroupId"] == {"Fn::GetAtt": [warehouse, "GroupId"]}]
    egress += props.get("SecurityGroupEgress", [])
    assert [(e["IpProtocol"], e["FromPort"], e["ToPort"], e.get("DestinationPrefixListId"))
            for e in egress] == [("tcp", 443, 443, settings.network.s3_prefix_list_id)]


def test_the_ebs_grant_condition_sits_on_create_grant_alone(templates):
    """kms:GrantIsForAWSResource is present only on grant operations: a statement putting it
    on DescribeKey or GenerateDataKeyWithoutPlaintext can never allow them."""
    found = [s for _, logical, _, s in statements({"access": templates["access"]})
             if "EmrServiceRole" in logical and any(
                 a.startswith("kms:") for a in as_list(s["Action"]))]  # fmt: skip
    assert found
    for s in found:
        bool_ = s.get("Condition", {}).get("Bool", {})
        if "kms:GrantIsForAWSResource" in bool_:
            assert as_list(s["Action"]) == ["kms:CreateGrant"], s
    actions = {a for s in found for a in as_list(s["Action"])}
    assert {"kms:CreateGrant", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext"} <= actions


def test_engineers_sessions_carry_their_identity_providers_tags(templates):
    (trust,) = [r["Properties"]["AssumeRolePolicyDocument"]
                for r in templates["warehouse-reporting"]["Resources"].values()
                if r["Type"] == "AWS::IAM::Role"
                and r["Properties"].get("RoleName") == "sensorpipe-warehouse-engineers"]
    actions = {a for s in trust["Statement"] for a in as_list(s["Action"])}
    assert actions == {"sts:AssumeRoleWithSAML", "sts:TagSession"}


def test_the_iot_rules_error_action_may_describe_its_log_streams(templates):
    found = [s for _, logical, _, s in statements({"access": templates["access"]})
             if logical.startswith("IotRuleRole") and s.get("Sid") == "ErrorActionLogs"]
    assert {a for s in found for a in as_list(s["Action"])} == {
        "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"}


def _arns_as_text(value):
    """A template's value with intrinsic functions (Fn::GetAtt of the data sets' ARNs) as
    placeholder ARNs, so the definition can be checked as an API request."""
    if isinstance(value, dict):
        if set(value) <= {"Fn::GetAtt", "Ref", "Fn::Join", "Fn::Sub"} and value:
            return "arn:aws:quicksight:eu-west-1:123456789012:dataset/placeholder"
        return {k: _arns_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_arns_as_text(v) for v in value]
    return value


def _enum_errors(value, shape, where="") -> list[str]:
    """Values outside an enum of botocore's model (ParamValidator checks types, not enums)."""
    errors = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in value.items():
            if name in shape.members:
                errors += _enum_errors(member, shape.members[name], f"{where}.{name}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            errors += _enum_errors(item, shape.member, f"{where}[{i}]")
    elif shape.type_name == "string" and shape.enum and value not in shape.enum:
        errors.append(f"{where}: {value!r} not one of {shape.enum}")
    return errors


def dashboard_problems(definition: dict, columns: dict[str, set[str]]) -> list[str]:
    """What botocore's QuickSight model refuses in `definition`, and the columns it names that
    its data sets (`columns`: identifier -> column names) do not have."""
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("quicksight")
    shape = model.operation_model("CreateDashboard").input_shape
    request = {"AwsAccountId": "123456789012", "DashboardId": "d", "Name": "d",
               "Definition": definition}  # fmt: skip
    report = ParamValidator().validate(request, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    problems += _enum_errors(request, shape)

    def named(value):
        if isinstance(value, dict):
            if set(value) == {"DataSetIdentifier", "ColumnName"}:
                yield value["DataSetIdentifier"], value["ColumnName"]
            for v in value.values():
                yield from named(v)
        elif isinstance(value, list):
            for v in value:
                yield from named(v)

    problems += [f"column {c!r} is not in data set {d!r}" for d, c in named(definition)
                 if c not in columns.get(d, set())]  # fmt: skip
    return problems


def test_the_business_dashboard_fits_botocores_model_and_its_data_sets(templates):
    import sqlglot
    from sensorpipe.sinks.warehouse import INCIDENTS, MINUTE_AGGREGATES
    from sensorpipe_estate.dashboard import (
        INCIDENT_LIFECYCLE_COLUMNS,
        INCIDENT_LIFECYCLE_SQL,
        INCIDENTS_ID,
        TREND_ID,
    )

    t = templates["warehouse-reporting"]["Resources"]
    by_type = {r["Type"]: r for r in t.values() if r["Type"].startswith("AWS::QuickSight::")}
    data_sets = [r["Properties"] for r in t.values() if r["Type"] == "AWS::QuickSight::DataSet"]
    assert all(d["ImportMode"] == "DIRECT_QUERY" for d in data_sets)
    # The incident data set's SQL reads the incidents table as the warehouse defines it and
    # returns the columns the data set declares.
    query = sqlglot.parse_one(INCIDENT_LIFECYCLE_SQL, read="redshift")
    assert [s.alias_or_name for s in query.selects] == [n for n, _ in INCIDENT_LIFECYCLE_COLUMNS]
    used = {c.name for c in query.find_all(sqlglot.exp.Column)}
    assert used <= set(INCIDENTS.column_names)
    columns = {
        INCIDENTS_ID: {n for n, _ in INCIDENT_LIFECYCLE_COLUMNS},
        TREND_ID: set(MINUTE_AGGREGATES.column_names),
    }
    for kind in ("AWS::QuickSight::Dashboard", "AWS::QuickSight::Analysis"):
        definition = _arns_as_text(by_type[kind]["Properties"]["Definition"])
        assert dashboard_problems(definition, columns) == [], kind
        visuals = [next(iter(v.values())) for s in definition["Sheets"] for v in s["Visuals"]]
        titles = " ".join(v["Title"]["FormatText"]["PlainText"] for v in visuals).lower()
        for wanted in ("incidents per day", "open incidents", "minutes to close", "mean"):
            assert wanted in titles
    # The checker itself catches a wrong column and a value outside the model's enum.
    planted = json.loads(json.dumps(definition).replace('"mean_value"', '"avg_value"', 1))
    planted["Sheets"][0]["Visuals"][0]["BarChartVisual"]["ChartConfiguration"][
        "BarsArrangement"] = "PILED"  # fmt: skip
    found = " ".join(dashboard_problems(planted, columns))
    assert "avg_value" in found and "PILED" in found


def test_engineers_role_runs_the_views_data_api_calls_on_its_workgroup_and_own_statements_only(
    cdk_out, settings
):
    """The calls `sensorpipe view` makes on AWS (tools/sensorpipe_tools/view.py,
    RedshiftReader) evaluated against the engineers' federated role."""
    from sensorpipe_tools.access_contract import Access, load_estate

    estate = load_estate(cdk_out, settings.account, settings.region)
    role = f"arn:aws:iam::{settings.account}:role/sensorpipe-warehouse-engineers"
    workgroup = "AWS::RedshiftServerless::Workgroup:Workgroup.Workgroup.WorkgroupArn"
    me = (("aws:userid", "AROAENGINEER:alice"),)
    mine = (*me, ("redshift-data:statement-owner-iam-userid", "AROAENGINEER:alice"))
    theirs = (*me, ("redshift-data:statement-owner-iam-userid", "AROAENGINEER:bob"))
    for access in (Access("redshift-data:ExecuteStatement", workgroup),
                   Access("redshift-serverless:GetCredentials", workgroup),
                   Access("redshift-data:DescribeStatement", "*", mine),
                   Access("redshift-data:GetStatementResult", "*", mine)):  # fmt: skip
        assert estate.decide(role, access).allowed, access.action
    other = "arn:aws:redshift-serverless:eu-west-1:123456789012:workgroup/other"
    for access in (Access("redshift-data:ExecuteStatement", other),
                   Access("redshift-data:GetStatementResult", "*", theirs),
                   Access("redshift-data:GetStatementResult", "*", me[:0])):  # fmt: skip
        assert not estate.decide(role, access).allowed, access
