"""EMR: steps, configurations and the security configuration checked against the EMR API's
model (botocore) and documented fields; `sensorpipe deploy` against moto's S3 and EMR (mocks:
no EMR can run here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from datetime import date
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore.validate import ParamValidator
from sensorpipe.config import DeploySettings, load_settings
from sensorpipe_tools.deploy import REDACTED, DeployError, build_plan, cli_steps_to_api, fill

ROOT = Path(__file__).resolve().parent.parent
EMR_MODEL = botocore.session.get_session().get_service_model("emr")
# What the estate's stacks output (infra/; CloudFormation DescribeStacks), by output key.
ESTATE_OUTPUTS = {
    "sensorpipe-keys-storage": {
        "LakeBucketName": "sensorpipe-lake-test",
        "ProtectedBucketName": "sensorpipe-phi-test",
        "EmrKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1111-2222",
    },
    "sensorpipe-network": {
        "EmrSubnetId": "subnet-0abc",
        "HospitalJdbcUrl": "jdbc:postgresql://db.hospital.test:5432/clinical?sslmode=verify-full",
    },
    "sensorpipe-access": {
        "EmrServiceRoleName": "sensorpipe-emr-service",
        "EmrInstanceProfileName": "sensorpipe-emr-instance",
    },
    "sensorpipe-streams-iot": {"TelemetryStreamName": "train-telemetry"},
    "sensorpipe-warehouse-reporting": {
        "WarehouseWorkgroupName": "wg",
        "WarehouseLoaderSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:rw",
        "WarehouseCopyRoleArn": "arn:aws:iam::123456789012:role/copy",
    },
}
OUTPUTS = {k: v for outputs in ESTATE_OUTPUTS.values() for k, v in outputs.items()}
IOT_ENDPOINT = {"IotDataEndpoint": "https://example-ats.iot.us-east-1.amazonaws.com"}
# What the estate does not make: the corporate Ranger admin, the Kerberos passwords.
CORPORATE_ENV = {
    "SENSORPIPE_RANGER_ADMIN_URL": "https://ranger.corp.test:6182",
    "SENSORPIPE_RANGER_ADMIN_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ra",
    "SENSORPIPE_RANGER_PLUGIN_ROLE_ARN": "arn:aws:iam::123456789012:role/ranger-plugins",
    "SENSORPIPE_RANGER_OTHER_SERVICES_ROLE_ARN": "arn:aws:iam::123456789012:role/ranger-other",
    "SENSORPIPE_RANGER_SPARK_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:rs",
    "SENSORPIPE_RANGER_EMRFS_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:re",
    "SENSORPIPE_RANGER_AUDIT_LOG_GROUP_ARN": "arn:aws:logs:us-east-1:123456789012:log-group:ra",
    "SENSORPIPE_KDC_ADMIN_PASSWORD": "kdc-admin-pw",
    "SENSORPIPE_CROSS_REALM_TRUST_PASSWORD": "trust-pw",
}
DEPLOY_ENV = {**CORPORATE_ENV, **OUTPUTS, **IOT_ENDPOINT}

# Security configuration fields, as the EMR Management Guide documents them ("Security
# configuration" JSON reference); botocore carries the document as an opaque string.
SECURITY_CONFIGURATION_FIELDS = {
    "EncryptionConfiguration": {
        "EnableInTransitEncryption": bool,
        "EnableAtRestEncryption": bool,
        "InTransitEncryptionConfiguration": {
            "TLSCertificateConfiguration": {
                "CertificateProviderType": {"PEM", "Custom"},
                "S3Object": str,
                "CertificateProviderClass": str,
            }
        },
        "AtRestEncryptionConfiguration": {
            "S3EncryptionConfiguration": {
                "EncryptionMode": {"SSE-S3", "SSE-KMS", "CSE-KMS", "CSE-Custom"},
                "AwsKmsKey": str,
            },
            "LocalDiskEncryptionConfiguration": {
                "EncryptionKeyProviderType": {"AwsKms", "Custom"},
                "AwsKmsKey": str,
                "EnableEbsEncryption": bool,
            },
        },
    },
    "AuthenticationConfiguration": {
        "KerberosConfiguration": {
            "Provider": {"ClusterDedicatedKdc", "ExternalKdc"},
            "ClusterDedicatedKdcConfiguration": {
                "TicketLifetimeInHours": int,
                "CrossRealmTrustConfiguration": {
                    "Realm": str, "Domain": str, "AdminServer": str, "KdcServer": str,
                },
            },
        }
    },
    "AuthorizationConfiguration": {
        "RangerConfiguration": {
            "AdminServerURL": str,
            "RoleForRangerPluginsARN": str,
            "RoleForOtherAWSServicesARN": str,
            "AdminServerSecretARN": str,
            "RangerPluginConfigurations": [
                {"App": {"Spark", "Hive", "EMRFS", "Trino"}, "ClientSecretARN": str,
                 "PolicyRepositoryName": str}
            ],
            "AuditConfiguration": {
                "Destinations": {"AmazonCloudWatchLogs": {"CloudWatchLogGroup": str}}
            },
        }
    },
}  # fmt: skip


def check_fields(value, spec, where="") -> list[str]:
    errors = []
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{where}: expected an object"]
        for key, item in value.items():
            if key not in spec:
                errors.append(f"{where}.{key}: not a documented field")
            else:
                errors += check_fields(item, spec[key], f"{where}.{key}")
    elif isinstance(spec, list):
        errors += [
            e for i, v in enumerate(value) for e in check_fields(v, spec[0], f"{where}[{i}]")
        ]
    elif isinstance(spec, set):
        if value not in spec:
            errors.append(f"{where}: {value!r} not one of {sorted(spec)}")
    elif not isinstance(value, spec) or (spec is str and not value):
        errors.append(f"{where}: expected {spec.__name__}, got {value!r}")
    return errors


def settings() -> DeploySettings:
    return load_settings(ROOT / "conf/deploy.yaml", environ=DEPLOY_ENV, kind=DeploySettings)


def validate(operation: str, params: dict) -> None:
    shape = EMR_MODEL.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()


def test_steps_file_converts_to_api_steps_the_model_accepts():
    steps = json.loads((ROOT / "emr-steps.json").read_text())
    names = " ".join(s["Name"] for s in steps)
    for job in ("stream_sensor_anomalies", "batch_daily_rollup", "ingest_jdbc",
                "patient_profile_snapshot", "compact_lake", "s3-dist-cp"):  # fmt: skip
        assert job in names
    filled = json.loads(fill(json.dumps(steps), {
        "ARTIFACTS_URI": "s3://b/a", "BUCKET": "b", "DATE": "2026-11-01",
        "CODE_VERSION": "v1", "JOBS_PRINCIPAL": "sensorpipe@R", "JOBS_KEYTAB": "/k",
    }, "emr-steps.json"))  # fmt: skip
    validate("AddJobFlowSteps", {"JobFlowId": "j-1", "Steps": cli_steps_to_api(filled)})
    distcp = next(s for s in filled if "s3-dist-cp" in s["Name"])
    compact = next(s for s in filled if "compact_lake" in s["Name"])
    copied_to = distcp["Args"][distcp["Args"].index("--dest") + 1]
    read_from = compact["Args"][compact["Args"].index("--input") + 1]
    assert copied_to.startswith(read_from)  # compaction reads what S3DistCp put in HDFS


def test_an_unfilled_placeholder_is_named():
    with pytest.raises(DeployError, match="no value for placeholder.*DATE"):
        fill('{"a": "{{DATE}}"}', {}, "emr-steps.json")


def test_security_configuration_uses_documented_fields_only():
    plan_values = {k: "x" for k in ("TLS_CERTIFICATES_URI", "KMS_KEY_ARN", "TRUSTED_REALM")}
    text = (ROOT / "conf/emr/security-configuration.json").read_text()
    import re

    values = {m: f"value-of-{m}" for m in re.findall(r"\{\{([A-Z_]+)\}\}", text)} | plan_values
    document = json.loads(fill(text, values, "security-configuration.json"))
    assert check_fields(document, SECURITY_CONFIGURATION_FIELDS) == []
    kerberos = document["AuthenticationConfiguration"]["KerberosConfiguration"]
    assert kerberos["Provider"] == "ClusterDedicatedKdc"
    assert "CrossRealmTrustConfiguration" in kerberos["ClusterDedicatedKdcConfiguration"]
    at_rest = document["EncryptionConfiguration"]["AtRestEncryptionConfiguration"]
    # No EMRFS encryption setting: EMRFS writes name no key, so each bucket's default key
    # applies (the lake key, the protected zone's key); the buckets refuse any other key
    # (infra/, docs/estate.md). Local disks and EBS use the EMR key.
    assert "S3EncryptionConfiguration" not in at_rest
    assert at_rest["LocalDiskEncryptionConfiguration"]["EnableEbsEncryption"] is True
    validate(
        "CreateSecurityConfiguration", {"Name": "n", "SecurityConfiguration": json.dumps(document)}
    )
    # The checker can fail: a misspelt field is reported.
    document["EncryptionConfiguration"]["EnableInTransitEncyption"] = True
    assert check_fields(document, SECURITY_CONFIGURATION_FIELDS) == [
        ".EncryptionConfiguration.EnableInTransitEncyption: not a documented field"
    ]


@pytest.mark.parametrize("metastore", ["glue", "jdbc"])
def test_run_job_flow_request_passes_the_emr_model(metastore, tmp_path):
    env = {
        **DEPLOY_ENV,
        "SENSORPIPE_METASTORE_KIND": metastore,
        "SENSORPIPE_METASTORE_JDBC_URL": "jdbc:postgresql://meta.test:5432/hive?sslmode=verify-full",
    }
    deploy = load_settings(ROOT / "conf/deploy.yaml", environ=env, kind=DeploySettings)
    root = project_copy(tmp_path)
    plan = build_plan(deploy, root, "v1", date(2026, 11, 1))
    request = plan.run_job_flow
    validate("RunJobFlow", {**request, "KerberosAttributes": {**request["KerberosAttributes"]}})
    classifications = {c["Classification"] for c in request["Configurations"]}
    assert {"spark-defaults", "spark-env", "delta-defaults", "spark-hive-site", "hive-site"} <= (
        classifications
    )
    hive = next(c for c in request["Configurations"] if c["Classification"] == "spark-hive-site")
    if metastore == "jdbc":
        assert hive["Properties"]["javax.jdo.option.ConnectionURL"].endswith(
            "meta.test:5432/hive?sslmode=verify-full"
        )
        assert "javax.jdo.option.ConnectionPassword" not in json.dumps(request)
    else:
        assert "AWSGlueDataCatalogHiveClientFactory" in json.dumps(hive)
    assert request["ReleaseLabel"] == "emr-spark-8.0.0"
    assert request["KerberosAttributes"]["KdcAdminPassword"] == REDACTED
    assert "{{" not in json.dumps(request)


def project_copy(tmp: Path) -> Path:
    """The repository's deploy inputs plus a dist/ with the real wheel and zip. The dependency
    archive is a stand-in: building it (venv-pack) is `make dist`'s job, which CI runs."""
    root = tmp / "project"
    for name in ("jobs", "conf", "bootstrap"):
        shutil.copytree(ROOT / name, root / name)
    shutil.copy(ROOT / "emr-steps.json", root)
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist),
                    str(ROOT)], check=True)  # fmt: skip
    with zipfile.ZipFile(dist / "sensorpipe.zip", "w") as zf:
        for path in (ROOT / "lib/sensorpipe").rglob("*.py"):
            zf.write(path, path.relative_to(ROOT / "lib"))
    stand_in = tmp / "README"
    stand_in.write_text("stand-in for the venv-pack archive")
    with tarfile.open(dist / "sensorpipe-deps.tar.gz", "w:gz") as tar:
        tar.add(stand_in, "README")
    return root


def create_estate_stacks(endpoint: str) -> None:
    """The estate's stacks as moto's CloudFormation holds them: a placeholder resource each and
    the outputs `sensorpipe deploy` reads (moto cannot create the real resources)."""
    cfn = boto3.client("cloudformation", region_name="us-east-1", endpoint_url=endpoint)
    for stack, outputs in ESTATE_OUTPUTS.items():
        template = {
            "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {key: {"Value": value} for key, value in outputs.items()},
        }
        cfn.create_stack(StackName=stack, TemplateBody=json.dumps(template))
    cfn.create_stack(StackName="another-team-stack", TemplateBody=json.dumps(
        {"Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
         "Outputs": {"LakeBucketName": {"Value": "not-ours"}}}))  # fmt: skip


@pytest.fixture(scope="module")
def deployed(moto_server, tmp_path_factory):
    """`sensorpipe deploy` creating a cluster, against moto's S3, EMR, IoT and CloudFormation
    (the estate's outputs come from DescribeStacks, not from the environment)."""
    root = project_copy(tmp_path_factory.mktemp("deploy"))
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server)
    s3.create_bucket(Bucket=OUTPUTS["LakeBucketName"])
    create_estate_stacks(moto_server)
    env = {**CORPORATE_ENV, "SENSORPIPE_ROOT": str(root), "AWS_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        from sensorpipe_tools.cli import main

        code = main(["deploy", "--config", str(root / "conf/deploy.yaml"), "--skip-build",
                     "--code-version", "v-test", "--date", "2026-11-01",
                     "--endpoint-url", moto_server])  # fmt: skip
    assert code == 0
    emr = boto3.client("emr", region_name="us-east-1", endpoint_url=moto_server)
    (cluster,) = emr.list_clusters()["Clusters"]
    return root, s3, emr, cluster["Id"]


def test_deploy_uploads_artifacts_and_bootstrap_scripts_moto_mock(deployed):
    root, s3, _, _ = deployed
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=OUTPUTS["LakeBucketName"])["Contents"]}
    prefix = "sensorpipe/artifacts/v-test"
    for needed in ("sensorpipe.zip", "sensorpipe-deps.tar.gz", "jars/postgresql.jar",
                   "jobs/ingest_jdbc.py", "jobs/compact_lake.py", "conf/emr.yaml",
                   "conf/health-emr.yaml", "bootstrap/kerberos.sh", "bootstrap/metastore.sh",
                   "bootstrap/install_dependencies.sh", "bootstrap/ranger_policies.py",
                   "conf/ranger/phi-masks.json"):  # fmt: skip
        assert f"{prefix}/{needed}" in keys
    assert any(k.startswith(f"{prefix}/sensorpipe-") and k.endswith(".whl") for k in keys)


def test_created_cluster_carries_everything_moto_mock(deployed):
    _, _, emr, cluster_id = deployed
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["ReleaseLabel"] == "emr-spark-8.0.0"
    assert cluster["SecurityConfiguration"] == "sensorpipe-kerberos-ranger-tls"
    assert cluster["LogUri"] == "s3://sensorpipe-lake-test/emr-logs/"
    assert {c["Classification"] for c in cluster["Configurations"]} >= {
        "spark-defaults", "spark-env", "delta-defaults", "spark-hive-site", "hive-site",
    }  # fmt: skip
    assert cluster["KerberosAttributes"]["Realm"] == "SENSORPIPE.INTERNAL"
    actions = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    scripts = [Path(a["ScriptPath"]).name for a in actions]
    assert scripts == ["install_dependencies.sh", "kerberos.sh", "metastore.sh"]
    kerberos = next(a for a in actions if a["ScriptPath"].endswith("kerberos.sh"))
    assert "--trusted-realm" in kerberos["Args"]
    steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert len(steps) == len(json.loads((ROOT / "emr-steps.json").read_text()))
    stream = next(s for s in steps if "stream_sensor_anomalies" in s["Name"])
    args = stream["Config"]["Args"]
    assert args[0] == "spark-submit" and "{{" not in " ".join(args)
    assert "spark.yarn.appMasterEnv.SENSORPIPE_REDSHIFT_WORKGROUP=wg" in args
    # From the stacks' outputs and IoT's DescribeEndpoint, none from the environment:
    assert (
        "spark.yarn.appMasterEnv.SENSORPIPE_REDSHIFT_SECRET_ARN="
        + OUTPUTS["WarehouseLoaderSecretArn"]
        in args
    )
    assert any(
        a.startswith("spark.yarn.appMasterEnv.SENSORPIPE_IOT_DATA_ENDPOINT=https://") for a in args
    )
    assert "spark.yarn.appMasterEnv.SENSORPIPE_STREAM_NAME=train-telemetry" in args
    security = json.loads(
        emr.describe_security_configuration(Name="sensorpipe-kerberos-ranger-tls")[
            "SecurityConfiguration"
        ]
    )
    assert security["AuthorizationConfiguration"]["RangerConfiguration"]["AdminServerURL"] == (
        "https://ranger.corp.test:6182"
    )


def test_deploy_adds_steps_to_a_running_cluster_moto_mock(deployed, moto_server, capsys):
    root, _, emr, cluster_id = deployed
    before = len(emr.list_steps(ClusterId=cluster_id)["Steps"])
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**CORPORATE_ENV, "SENSORPIPE_ROOT": str(root),
                           "AWS_REGION": "us-east-1"}.items():  # fmt: skip
            patch.setenv(key, value)
        from sensorpipe_tools.cli import main

        assert main(["deploy", "--config", str(root / "conf/deploy.yaml"), "--skip-build",
                     "--code-version", "v-test", "--cluster-id", cluster_id,
                     "--endpoint-url", moto_server]) == 0  # fmt: skip
    assert len(emr.list_steps(ClusterId=cluster_id)["Steps"]) == 2 * before
    assert f"added steps to cluster {cluster_id}" in capsys.readouterr().out
    assert len(emr.list_clusters()["Clusters"]) == 1


def test_dry_run_takes_the_estates_outputs_from_a_file(tmp_path, capsys, monkeypatch):
    root = project_copy(tmp_path)
    outputs = {**ESTATE_OUTPUTS, "manual": IOT_ENDPOINT}
    (tmp_path / "cdk-outputs.json").write_text(json.dumps(outputs))
    for key, value in {**CORPORATE_ENV, "SENSORPIPE_ROOT": str(root)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "no-account-here")  # nothing may be called
    from sensorpipe_tools.cli import main

    assert main(["deploy", "--config", str(root / "conf/deploy.yaml"), "--dry-run",
                 "--code-version", "v1", "--stack-outputs", str(tmp_path / "cdk-outputs.json"),
                 "--endpoint-url", "http://127.0.0.1:9"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert (
        '"Ec2SubnetId": "subnet-0abc"' in out and '"ServiceRole": "sensorpipe-emr-service"' in out
    )
    del outputs["sensorpipe-network"]
    (tmp_path / "cdk-outputs.json").write_text(json.dumps(outputs))
    assert main(["deploy", "--config", str(root / "conf/deploy.yaml"), "--dry-run",
                 "--stack-outputs", str(tmp_path / "cdk-outputs.json")]) == 2  # fmt: skip
    assert "EmrSubnetId" in capsys.readouterr().err


def test_stack_outputs_come_from_the_estates_stacks_only_moto_mock(moto_server):
    from sensorpipe_tools.deploy import stack_outputs

    cfn = boto3.client("cloudformation", region_name="us-east-1", endpoint_url=moto_server)
    if not any(s["StackName"] == "sensorpipe-network" for s in cfn.describe_stacks()["Stacks"]):
        create_estate_stacks(moto_server)
    assert stack_outputs(cfn, "sensorpipe") == OUTPUTS
    with pytest.raises(DeployError, match="no CloudFormation stack named nothing-"):
        stack_outputs(cfn, "nothing")
