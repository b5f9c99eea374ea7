"""EMR: steps, configurations and the security configuration checked against the EMR API's
model (botocore) and documented fields; `sensorpipe deploy` against moto's S3 and EMR (mocks:
no EMR can run here)."""

from __future__ import annotations

import json
import os
import re
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
from sensorpipe.config import ConfigError, DeploySettings, load_settings
from sensorpipe.config.deploy import RELEASE_APPLICATIONS
from sensorpipe_tools.deploy import (
    HOSPITAL_STREAMING_STEP,
    REDACTED,
    STEPS_FILES,
    STREAMING_STEP,
    DeployError,
    build_plan,
    cli_steps_to_api,
    fill,
    placeholder_values,
    plan_steps,
    steps_to_add,
)

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
        "EmrPrimarySecurityGroupId": "sg-0aaa1",
        "EmrCoreSecurityGroupId": "sg-0ccc2",
        "EmrServiceAccessSecurityGroupId": "sg-0eee3",
        "EmrOnPremisesSecurityGroupId": "sg-0fff4",
        "EmrKdcFromCorporateSecurityGroupId": "sg-0ddd5",
        "HospitalJdbcUrl": "jdbc:postgresql://db.hospital.test:5432/clinical?sslmode=verify-full",
    },
    "sensorpipe-access": {
        "EmrServiceRoleName": "sensorpipe-emr-service",
        "EmrInstanceProfileName": "sensorpipe-emr-instance",
        "StreamingJobsRoleArn": "arn:aws:iam::123456789012:role/sensorpipe-streaming-jobs",
        "BatchJobsRoleArn": "arn:aws:iam::123456789012:role/sensorpipe-batch-jobs",
        "HospitalJobsRoleArn": "arn:aws:iam::123456789012:role/sensorpipe-hospital-jobs",
    },
    "sensorpipe-streams-iot": {
        "TelemetryStreamName": "train-telemetry",
        "HospitalStreamName": "hospital-devices",
    },
    "sensorpipe-warehouse-reporting": {
        "WarehouseWorkgroupName": "wg",
        "WarehouseLoaderSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:rw",
        "WarehouseCopyRoleArn": "arn:aws:iam::123456789012:role/copy",
    },
}
OUTPUTS = {k: v for outputs in ESTATE_OUTPUTS.values() for k, v in outputs.items()}
IOT_ENDPOINT = {"IotDataEndpoint": "https://example-ats.iot.us-east-1.amazonaws.com"}
# What the estate does not make: the Kerberos passwords; and the deploy's region.
CORPORATE_ENV = {
    "SENSORPIPE_KDC_ADMIN_PASSWORD": "kdc-admin-pw",
    "SENSORPIPE_CROSS_REALM_TRUST_PASSWORD": "trust-pw",
    "AWS_REGION": "us-east-1",
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
    # "Runtime roles for Amazon EMR steps" and "Enable Lake Formation with Amazon EMR".
    "AuthorizationConfiguration": {
        "IAMConfiguration": {
            "EnableApplicationScopedIAMRole": bool,
            "ApplicationScopedIAMRoleConfiguration": {"PropagateSourceIdentity": bool},
        },
        "LakeFormationConfiguration": {"AuthorizedSessionTagValue": {"Amazon EMR"}},
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


def filled_steps(kind: str, **overrides: str) -> list[dict]:
    values = placeholder_values(settings(), "v1", date(2026, 11, 1)) | overrides
    return plan_steps(settings(), ROOT, values, kind)


def test_steps_files_convert_to_api_steps_the_model_accepts():
    batch, stream = filled_steps("batch"), filled_steps("stream")
    names = [s["Name"] for s in batch]
    assert names == [
        "sensorpipe jobs keytab", "sensorpipe jobs HDFS home", "sensorpipe ingest_jdbc",
        "sensorpipe patient_profile_snapshot",
        "sensorpipe batch_daily_rollup", "sensorpipe committed files of the day (for S3DistCp)",
        "sensorpipe s3-dist-cp events to HDFS for compaction", "sensorpipe compact_lake",
    ]  # fmt: skip
    assert [s["Name"] for s in stream] == [
        "sensorpipe jobs keytab", "sensorpipe jobs HDFS home", STREAMING_STEP
    ]  # fmt: skip
    assert not any("stream_sensor_anomalies" in n for n in names)
    for steps in (batch, stream):
        validate("AddJobFlowSteps", {"JobFlowId": "j-1", "Steps": cli_steps_to_api(steps)})
        assert "{{" not in json.dumps(steps)
    # S3DistCp copies only the files the manifest step listed from the sink log, to where
    # compaction reads.
    manifest, distcp, compact = batch[5], batch[6], batch[7]
    arg = lambda step, name: step["Args"][step["Args"].index(name) + 1]  # noqa: E731
    assert arg(manifest, "--write-manifest") == arg(distcp, "--srcPrefixesFile")
    assert arg(distcp, "--dest").startswith(arg(compact, "--input"))
    assert "--srcPattern" not in distcp["Args"]


def test_batch_steps_stop_at_the_first_failure_and_run_one_at_a_time(tmp_path):
    """Order is the order of the file; CANCEL_AND_WAIT cancels what follows a failed step (an
    ingest that failed is never followed by a snapshot of stale data)."""
    batch = filled_steps("batch")
    assert {s["ActionOnFailure"] for s in batch} == {"CANCEL_AND_WAIT"}
    position = {s["Name"].split()[-1]: i for i, s in enumerate(batch)}
    assert position["ingest_jdbc"] < position["patient_profile_snapshot"]
    assert position["keytab"] == 0 and position["home"] == 1
    assert position["S3DistCp)"] < position["compaction"] < position["compact_lake"]
    plan = build_plan(settings(), project_copy(tmp_path), "v1", date(2026, 11, 1), "batch")
    assert plan.run_job_flow["StepConcurrencyLevel"] == 1
    assert [s["Name"] for s in plan.steps] == [s["Name"] for s in batch]
    assert "Steps" not in plan.run_job_flow  # each goes with its runtime role (AddJobFlowSteps)


def awscli_add_steps(steps_file: Path, release_label: str = "emr-spark-8.0.0") -> list[dict]:
    """`aws emr add-steps --cluster-id j-1 --steps file://...` run by awscli's own code; the
    network is stubbed at botocore's before-call event: DescribeCluster answers with the
    release, AddJobFlowSteps is captured and answered (a mock: no EMR here)."""
    from awscli.clidriver import create_clidriver
    from botocore.awsrequest import AWSResponse

    captured: dict = {}
    ok = AWSResponse("https://elasticmapreduce.us-east-1.amazonaws.com/", 200, {}, None)

    def capture(params, model, **_):  # the API parameters, before serialisation
        if model.name == "AddJobFlowSteps":
            captured.update(params)

    def answer(model, **_):
        if model.name == "DescribeCluster":
            return ok, {"Cluster": {"Id": "j-1", "ReleaseLabel": release_label}}
        return ok, {"StepIds": [f"s-{i}" for i in range(len(captured["Steps"]))]}

    driver = create_clidriver()
    driver.session.register("before-parameter-build.emr", capture)
    driver.session.register("before-call.emr", answer)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        code = driver.main(["emr", "add-steps", "--cluster-id", "j-1",
                            "--steps", f"file://{steps_file}"])  # fmt: skip
    assert code == 0
    return captured["Steps"]


@pytest.mark.parametrize("kind", ["batch", "stream"])
def test_the_steps_files_go_through_awscli_add_steps_as_deploy_converts_them(kind, tmp_path):
    raw = ROOT / STEPS_FILES[kind]
    # The file as committed (placeholders and all) is what users pass to the CLI.
    by_cli = awscli_add_steps(raw)
    assert by_cli == cli_steps_to_api(json.loads(raw.read_text()))
    # And filled, as `sensorpipe deploy` sends it.
    filled = tmp_path / "filled.json"
    filled.write_text(json.dumps(filled_steps(kind)))
    assert awscli_add_steps(filled) == cli_steps_to_api(filled_steps(kind))


def test_an_unfilled_placeholder_is_named():
    with pytest.raises(DeployError, match="no value for placeholder.*DATE"):
        fill('{"a": "{{DATE}}"}', {}, "emr-steps.json")


def test_security_configuration_uses_documented_fields_only():
    plan_values = {k: "x" for k in ("TLS_CERTIFICATES_URI", "KMS_KEY_ARN", "TRUSTED_REALM")}
    text = (ROOT / "conf/emr/security-configuration.json").read_text()

    values = {m: f"value-of-{m}" for m in re.findall(r"\{\{([A-Z_]+)\}\}", text)} | plan_values
    document = fill(json.loads(text), values, "security-configuration.json")
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


# The classifications of the release's applications this deployment uses (Spark, Delta), from
# the EMR Release Guide's configuration classifications for Spark and Delta Lake.
RELEASE_CLASSIFICATIONS = {"spark-defaults", "spark-env", "spark-hive-site", "spark-log4j2",
                           "spark-metrics", "delta-defaults"}  # fmt: skip


@pytest.mark.parametrize("kind", ["batch", "stream", "hospital-stream"])
@pytest.mark.parametrize("metastore", ["glue", "jdbc"])
def test_run_job_flow_request_passes_the_emr_model(kind, metastore, tmp_path):
    env = {
        **DEPLOY_ENV,
        "SENSORPIPE_METASTORE_KIND": metastore,
        "SENSORPIPE_METASTORE_JDBC_URL": "jdbc:postgresql://meta.test:5432/hive?sslmode=verify-full",
        "SENSORPIPE_METASTORE_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:m",
    }
    deploy = load_settings(ROOT / "conf/deploy.yaml", environ=env, kind=DeploySettings)
    root = project_copy(tmp_path)
    plan = build_plan(deploy, root, "v1", date(2026, 11, 1), kind)
    request = plan.run_job_flow
    validate("RunJobFlow", request)
    apps = {a["Name"] for a in request["Applications"]}
    assert apps <= RELEASE_APPLICATIONS["emr-spark-8.0.0"] and "Spark" in apps
    classifications = {c["Classification"] for c in request["Configurations"]}
    assert classifications <= RELEASE_CLASSIFICATIONS
    assert {"spark-defaults", "spark-env", "delta-defaults", "spark-hive-site"} <= classifications
    hive = next(c for c in request["Configurations"] if c["Classification"] == "spark-hive-site")
    if metastore == "jdbc":
        properties = hive["Properties"]
        assert properties["javax.jdo.option.ConnectionURL"].endswith(
            "meta.test:5432/hive?sslmode=verify-full"
        )
        # EMR resolves the secret when it configures the nodes; the request holds its ARN only,
        # as the value of the property's key marked EMR.secret@ (Release Guide, "Store
        # sensitive configuration data in AWS Secrets Manager").
        assert properties["EMR.secret@javax.jdo.option.ConnectionPassword"] == (
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:m"
        )
        assert "javax.jdo.option.ConnectionPassword" not in properties
    else:
        assert "AWSGlueDataCatalogHiveClientFactory" in json.dumps(hive)
    assert request["ReleaseLabel"] == "emr-spark-8.0.0"
    assert request["Instances"]["Ec2SubnetId"] == "subnet-0abc"
    assert request["KerberosAttributes"]["KdcAdminPassword"] == REDACTED
    assert request["StepConcurrencyLevel"] == 1
    assert ("ManagedScalingPolicy" in request) == (kind == "batch")
    assert ("AutoTerminationPolicy" in request) == (kind == "batch")
    assert request["Name"] == f"sensorpipe-{kind}"
    # No bootstrap action repeats the security configuration or waits for an application.
    scripts = {a["ScriptBootstrapAction"]["Args"][0] for a in request["BootstrapActions"]}
    assert scripts == {"user"}
    assert "{{" not in json.dumps(request)


def test_configuration_refuses_what_the_release_or_the_network_cannot_give(tmp_path):
    def load(text: str | None = None, **env: str) -> DeploySettings:
        path = tmp_path / "deploy.yaml"
        path.write_text(text or (ROOT / "conf/deploy.yaml").read_text())
        return load_settings(path, environ={**DEPLOY_ENV, **env}, kind=DeploySettings)

    with pytest.raises(ConfigError, match="^cluster.ec2_subnet_id: a private subnet id"):
        load(EmrSubnetId="sg-0abc")
    text = (ROOT / "conf/deploy.yaml").read_text()
    for old, new, message in (
        ("applications: Spark,Delta", "applications: Hadoop,Spark,Hive",
         "^cluster.applications: Hadoop is not an application of emr-spark-8.0.0"),
        ("release_label: emr-spark-8.0.0", "release_label: emr-7.12.0",
         "^cluster.release_label: emr-7.12.0 is not a release this deployment knows"),
    ):  # fmt: skip
        assert old in text
        with pytest.raises(ConfigError, match=message):
            load(text.replace(old, new))
    with pytest.raises(ConfigError, match="must share an architecture"):
        load(SENSORPIPE_PRIMARY_INSTANCE_TYPE="m7g.xlarge")
    with pytest.raises(ConfigError, match="^cluster.core_security_group: a security group id"):
        load(EmrCoreSecurityGroupId="subnet-0abc")
    with pytest.raises(ConfigError, match="^runtime_roles.hospital: an IAM role ARN"):
        load(HospitalJobsRoleArn="sensorpipe-hospital-jobs")
    with pytest.raises(ConfigError, match="^region: an AWS region such as eu-west-1"):
        load(AWS_REGION="Ireland")
    with pytest.raises(ConfigError, match=r"^region: refers to \$\{AWS_REGION\}, which is not set"):
        load(AWS_REGION="")


def test_the_archive_architecture_must_match_the_instances(tmp_path):
    root = project_copy(tmp_path)
    (root / "dist/BUILD-INFO.json").write_text('{"machine": "aarch64", "python": "3.11"}')
    with pytest.raises(DeployError, match="built for arm64 but cluster.core_instance_type "
                                          "m7i.xlarge is x86_64"):  # fmt: skip
        build_plan(settings(), root, "v1", date(2026, 11, 1), "stream")
    graviton = load_settings(
        ROOT / "conf/deploy.yaml", kind=DeploySettings,
        environ={**DEPLOY_ENV, "SENSORPIPE_PRIMARY_INSTANCE_TYPE": "m7g.xlarge",
                 "SENSORPIPE_CORE_INSTANCE_TYPE": "m7g.2xlarge"},
    )  # fmt: skip
    plan = build_plan(graviton, root, "v1", date(2026, 11, 1), "stream")
    assert plan.notes == ["dependency archive built for arm64"]


def test_the_security_configuration_is_named_by_its_content(tmp_path):
    root = project_copy(tmp_path)
    first = build_plan(settings(), root, "v1", date(2026, 11, 1), "stream")
    again = build_plan(settings(), root, "v2", date(2026, 11, 2), "stream")
    assert first.security_configuration_name == again.security_configuration_name
    # The batch cluster's adds Lake Formation for its readers: another document, another name.
    batch = build_plan(settings(), root, "v1", date(2026, 11, 1), "batch")
    assert batch.security_configuration_name != first.security_configuration_name
    assert first.run_job_flow["SecurityConfiguration"] == first.security_configuration_name
    env = {**DEPLOY_ENV, "SENSORPIPE_CORP_REALM": "OTHER.CORP"}
    changed = load_settings(ROOT / "conf/deploy.yaml", kind=DeploySettings, environ=env)
    other = build_plan(changed, root, "v1", date(2026, 11, 1), "stream")
    assert other.security_configuration_name != first.security_configuration_name
    assert other.security_configuration_name.startswith("sensorpipe-")
    without = load_settings(ROOT / "conf/deploy.yaml", kind=DeploySettings,
                            environ={**DEPLOY_ENV, "SENSORPIPE_KERBEROS": "none",
                                     "SENSORPIPE_AUTHORIZATION": "runtime-roles"})  # fmt: skip
    bare = build_plan(without, root, "v1", date(2026, 11, 1), "batch")
    assert set(bare.security_configuration) == {
        "EncryptionConfiguration", "AuthorizationConfiguration"
    }  # fmt: skip
    assert set(bare.security_configuration["AuthorizationConfiguration"]) == {"IAMConfiguration"}
    assert (
        "KerberosAttributes" not in bare.run_job_flow and not bare.run_job_flow["BootstrapActions"]
    )
    bare = build_plan(without, root, "v1", date(2026, 11, 1), "stream")
    stream = bare.steps[0]["HadoopJarStep"]["Args"]
    assert bare.steps[0]["Name"] == STREAMING_STEP
    assert "--principal" not in stream and "--keytab" not in stream


def project_copy(tmp: Path) -> Path:
    """The repository's deploy inputs plus a dist/ with the real wheel and zip. The dependency
    archive is a stand-in: building it (venv-pack) is `make dist`'s job, which CI runs."""
    root = tmp / "project"
    for name in ("jobs", "conf", "bootstrap"):
        shutil.copytree(ROOT / name, root / name)
    for steps_file in STEPS_FILES.values():
        shutil.copy(ROOT / steps_file, root)
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
    (dist / "BUILD-INFO.json").write_text('{"machine": "x86_64", "python": "3.11"}')
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


def run_deploy(root: Path, *args: str) -> int:
    env = {**CORPORATE_ENV, "SENSORPIPE_ROOT": str(root), "AWS_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        from sensorpipe_tools.cli import main

        return main(["deploy", "--config", str(root / "conf/deploy.yaml"), "--skip-build",
                     "--code-version", "v-test", "--date", "2026-11-01", *args])  # fmt: skip


@pytest.fixture(scope="module")
def deployed(moto_server, tmp_path_factory):
    """`sensorpipe deploy` creating both clusters, against moto's S3, EMR, IoT and
    CloudFormation (the estate's outputs come from DescribeStacks, not from the environment)."""
    root = project_copy(tmp_path_factory.mktemp("deploy"))
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server)
    s3.create_bucket(Bucket=OUTPUTS["LakeBucketName"])
    create_estate_stacks(moto_server)
    emr = boto3.client("emr", region_name="us-east-1", endpoint_url=moto_server)
    ids = {}
    for kind in ("stream", "hospital-stream", "batch"):
        assert run_deploy(root, "--cluster", kind, "--endpoint-url", moto_server) == 0
        (ids[kind],) = [c["Id"] for c in emr.list_clusters()["Clusters"]
                        if c["Name"] == f"sensorpipe-{kind}"]  # fmt: skip
    return root, s3, emr, ids


def test_deploy_uploads_artifacts_and_node_scripts_moto_mock(deployed):
    root, s3, _, _ = deployed
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=OUTPUTS["LakeBucketName"])["Contents"]}
    prefix = "sensorpipe/artifacts/v-test"
    for needed in ("sensorpipe.zip", "sensorpipe-deps.tar.gz", "jars/postgresql.jar",
                   "jobs/ingest_jdbc.py", "jobs/compact_lake.py", "conf/emr.yaml",
                   "conf/health-emr.yaml", "bootstrap/sensorpipe_node.sh",
                   "bootstrap/ranger_policies.py", "conf/ranger/spark-access.json",
                   "conf/ranger/servicedefs/amazon-emr-spark.json",
                   "conf/lakeformation/data-cells-filters.json"):  # fmt: skip
        assert f"{prefix}/{needed}" in keys
    assert any(k.startswith(f"{prefix}/sensorpipe-") and k.endswith(".whl") for k in keys)


def test_created_clusters_carry_everything_moto_mock(deployed):
    _, _, emr, ids = deployed
    for kind, cluster_id in ids.items():
        cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
        assert cluster["ReleaseLabel"] == "emr-spark-8.0.0"
        assert cluster["SecurityConfiguration"].startswith("sensorpipe-")
        assert cluster["LogUri"] == "s3://sensorpipe-lake-test/emr-logs/"
        assert {c["Classification"] for c in cluster["Configurations"]} == {
            "spark-defaults", "spark-env", "delta-defaults", "spark-hive-site",
        }  # fmt: skip
        assert cluster["KerberosAttributes"]["Realm"] == "SENSORPIPE.INTERNAL"
        assert cluster["Ec2InstanceAttributes"]["Ec2SubnetId"] == "subnet-0abc"
        actions = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
        assert [(Path(a["ScriptPath"]).name, a["Args"][0]) for a in actions] == [
            ("sensorpipe_node.sh", "user")
        ]
        steps = emr.list_steps(ClusterId=cluster_id)["Steps"][::-1]  # newest first
        assert [s["Name"] for s in steps] == [s["Name"] for s in filled_steps(kind)]
    stream = emr.list_steps(ClusterId=ids["stream"])["Steps"][0]
    args = stream["Config"]["Args"]
    assert stream["Name"] == STREAMING_STEP
    assert args[0] == "spark-submit" and "{{" not in " ".join(args)
    assert args[args.index("--principal") + 1] == "sensorpipe@SENSORPIPE.INTERNAL"
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
    name = emr.describe_cluster(ClusterId=ids["stream"])["Cluster"]["SecurityConfiguration"]
    security = json.loads(emr.describe_security_configuration(Name=name)["SecurityConfiguration"])
    assert security["AuthorizationConfiguration"] == {"IAMConfiguration": {
        "EnableApplicationScopedIAMRole": True,
        "ApplicationScopedIAMRoleConfiguration": {"PropagateSourceIdentity": True}}}  # fmt: skip


def test_a_second_deploy_adds_no_streaming_step_moto_mock(deployed, moto_server, capsys):
    root, _, emr, ids = deployed
    before = emr.list_steps(ClusterId=ids["stream"])["Steps"]
    capsys.readouterr()
    assert run_deploy(root, "--cluster", "stream", "--cluster-id", ids["stream"],
                      "--endpoint-url", moto_server) == 0  # fmt: skip
    after = emr.list_steps(ClusterId=ids["stream"])["Steps"]
    assert len(after) == len(before)
    out = capsys.readouterr().out
    assert f"added 0 steps to cluster {ids['stream']}" in out
    assert f"not added: {STREAMING_STEP}: already on the cluster" in out
    # The batch cluster takes the day's batch steps again, in order; never the stream's.
    batch_before = len(emr.list_steps(ClusterId=ids["batch"])["Steps"])
    assert run_deploy(root, "--cluster", "batch", "--cluster-id", ids["batch"],
                      "--endpoint-url", moto_server) == 0  # fmt: skip
    added = emr.list_steps(ClusterId=ids["batch"])["Steps"][: -batch_before or None][::-1]
    assert [s["Name"] for s in added] == [s["Name"] for s in filled_steps("batch")][2:]
    # A stream deploy aimed at the batch cluster is refused.
    assert run_deploy(root, "--cluster", "stream", "--cluster-id", ids["batch"],
                      "--endpoint-url", moto_server) == 2  # fmt: skip
    assert "is a batch cluster, not stream" in capsys.readouterr().err
    assert len(emr.list_clusters()["Clusters"]) == 3


def test_steps_to_add_submits_the_stream_once_per_cluster(tmp_path):
    plan = build_plan(settings(), project_copy(tmp_path), "v1", date(2026, 11, 1), "stream")

    def on_cluster(*states):
        return [{"Name": n, "Status": {"State": st}} for n, st in states]

    keep, _ = steps_to_add(plan, [])
    assert [s["Name"] for s in keep] == [
        "sensorpipe jobs keytab", "sensorpipe jobs HDFS home", STREAMING_STEP
    ]  # fmt: skip
    for state in ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"):
        existing = on_cluster(("sensorpipe jobs keytab", "COMPLETED"),
                              ("sensorpipe jobs HDFS home", "COMPLETED"), (STREAMING_STEP, state))
        assert steps_to_add(plan, existing)[0] == []
        restarted, _ = steps_to_add(plan, existing, restart_stream=True)
        active = state in ("PENDING", "RUNNING")
        assert [s["Name"] for s in restarted] == ([] if active else [STREAMING_STEP])


def test_dry_run_json_prints_requests_the_model_accepts(tmp_path, capsys, monkeypatch):
    root = project_copy(tmp_path)
    outputs = {**ESTATE_OUTPUTS, "manual": IOT_ENDPOINT}
    (tmp_path / "cdk-outputs.json").write_text(json.dumps(outputs))
    for key, value in {**CORPORATE_ENV, "SENSORPIPE_ROOT": str(root)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "no-account-here")  # nothing may be called
    from sensorpipe_tools.cli import main

    for kind in ("stream", "batch"):
        assert main(["deploy", "--config", str(root / "conf/deploy.yaml"), "--dry-run", "--json",
                     "--cluster", kind, "--code-version", "v1",
                     "--stack-outputs", str(tmp_path / "cdk-outputs.json"),
                     "--endpoint-url", "http://127.0.0.1:9"]) == 0  # fmt: skip
        out = capsys.readouterr().out
        requests = json.loads(out)
        assert set(requests) == {"CreateSecurityConfiguration", "RunJobFlow", "AddJobFlowSteps"}
        for operation, params in requests.items():
            for one in params if isinstance(params, list) else [params]:
                validate(operation, one)
        assert requests["RunJobFlow"]["Instances"]["Ec2SubnetId"] == "subnet-0abc"
        assert requests["RunJobFlow"]["ServiceRole"] == "sensorpipe-emr-service"
        for secret in ("kdc-admin-pw", "trust-pw"):
            assert secret not in out
    del outputs["sensorpipe-network"]
    (tmp_path / "cdk-outputs.json").write_text(json.dumps(outputs))
    assert main(["deploy", "--config", str(root / "conf/deploy.yaml"), "--dry-run",
                 "--cluster", "stream",
                 "--stack-outputs", str(tmp_path / "cdk-outputs.json")]) == 2  # fmt: skip
    assert "EmrSubnetId" in capsys.readouterr().err


def test_dry_run_json_for_a_running_cluster_prints_add_job_flow_steps_moto_mock(
    deployed, moto_server, capsys
):
    root, _, emr, ids = deployed
    before = len(emr.list_steps(ClusterId=ids["batch"])["Steps"])
    capsys.readouterr()
    assert run_deploy(root, "--cluster", "batch", "--cluster-id", ids["batch"], "--dry-run",
                      "--json", "--endpoint-url", moto_server) == 0  # fmt: skip
    requests = json.loads(capsys.readouterr().out)["AddJobFlowSteps"]
    for request in requests:
        validate("AddJobFlowSteps", request)
        assert request["JobFlowId"] == ids["batch"]
    assert [r["ExecutionRoleArn"].rsplit("/", 1)[1] for r in requests] == [
        "sensorpipe-hospital-jobs", "sensorpipe-batch-jobs"
    ]  # fmt: skip
    assert len(emr.list_steps(ClusterId=ids["batch"])["Steps"]) == before  # nothing added


def test_stack_outputs_come_from_the_estates_stacks_only_moto_mock(moto_server):
    from sensorpipe_tools.deploy import stack_outputs

    cfn = boto3.client("cloudformation", region_name="us-east-1", endpoint_url=moto_server)
    if not any(s["StackName"] == "sensorpipe-network" for s in cfn.describe_stacks()["Stacks"]):
        create_estate_stacks(moto_server)
    assert stack_outputs(cfn, "sensorpipe") == OUTPUTS
    with pytest.raises(DeployError, match="no CloudFormation stack named nothing-"):
        stack_outputs(cfn, "nothing")


def test_the_batch_compacts_a_day_whose_late_data_horizon_has_passed():
    """The batch steps of day D compact day D - compaction_delay_days; by the start of D its
    horizon (conf/emr.yaml's decode.max_event_lag_hours) has passed, so the step can run."""
    from datetime import UTC, datetime

    from sensorpipe.compaction import late_data_horizon

    from tests.test_config import EMR_ENV

    day = date(2026, 11, 28)
    batch = plan_steps(settings(), ROOT, placeholder_values(settings(), "v1", day), "batch")
    compact = next(s for s in batch if s["Name"] == "sensorpipe compact_lake")
    compacted = date.fromisoformat(compact["Args"][compact["Args"].index("--date") + 1])
    assert compacted == date(2026, 11, 20)
    emr = load_settings(ROOT / "conf/emr.yaml", environ=EMR_ENV)
    assert late_data_horizon(compacted, emr) <= datetime(2026, 11, 28, tzinfo=UTC)
    others = [s for s in batch if s["Name"] in ("sensorpipe patient_profile_snapshot",
                                                "sensorpipe batch_daily_rollup")]  # fmt: skip
    assert all("2026-11-28" in " ".join(s["Args"]) for s in others)


# --- one plan, one region, every step with its runtime role (issue 28) --------------------------

# The estate's outputs as `cdk deploy --outputs-file` writes them for a deployment in eu-west-1.
EU_OUTPUTS = {
    stack: {
        key: value.replace("us-east-1", "eu-west-1").replace(
            "db.hospital.test", "db.hospital.eu.test"
        )
        for key, value in outputs.items()
    }
    for stack, outputs in ESTATE_OUTPUTS.items()
}
ANY_REGION = re.compile(r"\b[a-z]{2}(?:-gov)?-(?:north|south|east|west|central)[a-z]*-\d\b")


def dry_run_in_a_clean_environment(root: Path, outputs: Path, kind: str, **env: str):
    """`sensorpipe deploy --dry-run --json` in a process whose environment holds only what
    a first deployment has: PATH, the region, the Kerberos passwords (and the project root)."""
    clean = {"PATH": os.environ["PATH"], "SENSORPIPE_ROOT": str(root),
             "SENSORPIPE_KDC_ADMIN_PASSWORD": "kdc-admin-pw",
             "SENSORPIPE_CROSS_REALM_TRUST_PASSWORD": "trust-pw", **env}  # fmt: skip
    return subprocess.run(
        [str(Path(sys.executable).parent / "sensorpipe"), "deploy", "--config",
         str(root / "conf/deploy.yaml"), "--cluster", kind, "--dry-run", "--json",
         "--code-version", "v1", "--date", "2026-11-28", "--stack-outputs", str(outputs)],
        env=clean, capture_output=True, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def eu_project(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("eu")
    (tmp / "cdk-outputs.json").write_text(json.dumps(EU_OUTPUTS))
    return project_copy(tmp), tmp / "cdk-outputs.json"


@pytest.mark.parametrize("kind", ["stream", "hospital-stream", "batch"])
def test_a_dry_run_in_eu_west_1_needs_only_the_estates_outputs_and_stays_in_that_region(
    kind, eu_project
):
    root, outputs = eu_project
    result = dry_run_in_a_clean_environment(root, outputs, kind, AWS_REGION="eu-west-1")
    assert result.returncode == 0, result.stderr
    requests = json.loads(result.stdout)
    for request in requests["AddJobFlowSteps"]:
        validate("AddJobFlowSteps", request)
    validate("RunJobFlow", requests["RunJobFlow"])
    # Every step, Spark or not, is submitted with a runtime role, the one of its family.
    roles = EU_OUTPUTS["sensorpipe-access"]
    family = {"streaming": roles["StreamingJobsRoleArn"], "batch": roles["BatchJobsRoleArn"],
              "hospital": roles["HospitalJobsRoleArn"]}  # fmt: skip
    expected = {
        "sensorpipe stream_sensor_anomalies": "streaming",
        "sensorpipe hospital device stream": "hospital",
        "sensorpipe ingest_jdbc": "hospital",
        "sensorpipe patient_profile_snapshot": "hospital",
        "sensorpipe batch_daily_rollup": "batch",
        "sensorpipe committed files of the day (for S3DistCp)": "batch",
        "sensorpipe s3-dist-cp events to HDFS for compaction": "batch",
        "sensorpipe compact_lake": "batch",
    }
    submitted = [(s, r["ExecutionRoleArn"]) for r in requests["AddJobFlowSteps"]
                 for s in r["Steps"]]  # fmt: skip
    spark = [(s, role) for s, role in submitted if s["HadoopJarStep"]["Args"][0] == "spark-submit"]
    assert spark and all(role == family[expected[s["Name"]]] for s, role in spark)
    assert all(role in family.values() for _, role in submitted)
    assert "Steps" not in requests["RunJobFlow"]
    # Application-scoped roles with source identity; no Ranger integration.
    security = json.loads(requests["CreateSecurityConfiguration"]["SecurityConfiguration"])
    iam = security["AuthorizationConfiguration"]["IAMConfiguration"]
    assert iam == {"EnableApplicationScopedIAMRole": True,
                   "ApplicationScopedIAMRoleConfiguration": {"PropagateSourceIdentity": True}}
    assert "Ranger" not in result.stdout
    # Lake Formation's fine-grained access only where no streaming job runs.
    lake_formation = "LakeFormationConfiguration" in security["AuthorizationConfiguration"]
    assert lake_formation == (kind == "batch")
    # One region, and it is the deployment's: the jar, the endpoints, every ARN.
    assert set(ANY_REGION.findall(result.stdout)) == {"eu-west-1"}
    instances = requests["RunJobFlow"]["Instances"]
    network = EU_OUTPUTS["sensorpipe-network"]
    assert (instances["EmrManagedMasterSecurityGroup"], instances["EmrManagedSlaveSecurityGroup"],
            instances["ServiceAccessSecurityGroup"]) == (
        network["EmrPrimarySecurityGroupId"], network["EmrCoreSecurityGroupId"],
        network["EmrServiceAccessSecurityGroupId"])  # fmt: skip
    # Every Spark step's driver and executors are told the region.
    for step, _ in spark:
        args = step["HadoopJarStep"]["Args"]
        assert "spark.yarn.appMasterEnv.AWS_REGION=eu-west-1" in args
        assert "spark.executorEnv.AWS_REGION=eu-west-1" in args
    names = [s["Name"] for s, _ in submitted]
    assert (HOSPITAL_STREAMING_STEP in names) == (kind == "hospital-stream")


def test_only_aws_default_region_gives_the_whole_plan_that_region(eu_project):
    """The AWS CLI reads AWS_DEFAULT_REGION when AWS_REGION is unset; so does the deploy, for
    the whole plan: script-runner's bucket included (it was us-east-1 with an eu subnet)."""
    root, outputs = eu_project
    result = dry_run_in_a_clean_environment(root, outputs, "stream", AWS_DEFAULT_REGION="eu-west-1")
    assert result.returncode == 0, result.stderr
    assert "s3://eu-west-1.elasticmapreduce/libs/script-runner/script-runner.jar" in result.stdout
    assert set(ANY_REGION.findall(result.stdout)) == {"eu-west-1"}
    none = dry_run_in_a_clean_environment(root, outputs, "stream")
    assert none.returncode == 2 and "region: refers to ${AWS_REGION}" in none.stderr


def test_a_plan_naming_another_region_is_refused(tmp_path):
    """The estate deployed in us-east-1, the deploy aimed at eu-west-1: refused, naming it."""
    env = {**DEPLOY_ENV, "AWS_REGION": "eu-west-1"}
    deploy = load_settings(ROOT / "conf/deploy.yaml", environ=env, kind=DeploySettings)
    with pytest.raises(DeployError, match="the plan for region eu-west-1 names us-east-1"):
        build_plan(deploy, project_copy(tmp_path), "v1", date(2026, 11, 1), "batch")


def test_ranger_authorization_is_refused_from_release_7_4_citing_the_guide():
    env = {**DEPLOY_ENV, "SENSORPIPE_AUTHORIZATION": "ranger"}
    with pytest.raises(ConfigError, match=r"^security.authorization: ranger is not supported on "
                       r"emr-spark-8.0.0: .* from release 7.4 on .*Integrate Amazon EMR with "
                       r"Apache Ranger"):  # fmt: skip
        load_settings(ROOT / "conf/deploy.yaml", environ=env, kind=DeploySettings)


def test_a_value_holding_quotes_stays_one_value_in_the_requests(tmp_path):
    """The code version (a branch name, a tag) lands in every artifact URI. Filled into the JSON
    text, `v1", "--conf", "spark.driver.extraJavaOptions=-Dx` added spark-submit arguments."""
    evil = 'v1", "--conf", "spark.driver.extraJavaOptions=-Dinjected=1'
    root = project_copy(tmp_path)
    plain = build_plan(settings(), root, "v1", date(2026, 11, 1), "stream")
    tricky = build_plan(settings(), root, evil, date(2026, 11, 1), "stream")
    for a, b in zip(plain.steps, tricky.steps, strict=True):
        assert len(a["HadoopJarStep"]["Args"]) == len(b["HadoopJarStep"]["Args"])
    args = tricky.steps[-1]["HadoopJarStep"]["Args"]
    assert "spark.driver.extraJavaOptions=-Dinjected=1" not in args
    assert any(evil in a for a in args)


def test_the_estates_security_groups_are_the_clusters(tmp_path):
    plan = build_plan(settings(), project_copy(tmp_path), "v1", date(2026, 11, 1), "batch")
    instances = plan.run_job_flow["Instances"]
    # The on-premises path (infra/ network): JDBC and the KDCs on every node, the cluster KDC
    # reachable from the corporate network on the primary.
    assert instances["AdditionalMasterSecurityGroups"] == [
        OUTPUTS["EmrOnPremisesSecurityGroupId"], OUTPUTS["EmrKdcFromCorporateSecurityGroupId"]
    ]  # fmt: skip
    assert instances["AdditionalSlaveSecurityGroups"] == [OUTPUTS["EmrOnPremisesSecurityGroupId"]]
    assert instances["EmrManagedMasterSecurityGroup"] == OUTPUTS["EmrPrimarySecurityGroupId"]
    assert instances["EmrManagedSlaveSecurityGroup"] == OUTPUTS["EmrCoreSecurityGroupId"]
    assert instances["ServiceAccessSecurityGroup"] == OUTPUTS["EmrServiceAccessSecurityGroupId"]


def test_the_metastore_password_is_an_emr_secret_on_the_propertys_key(tmp_path):
    """Release Guide, "Store sensitive configuration data in AWS Secrets Manager": the key is
    `EMR.secret@<property>` and the value the secret's ARN; in the value, EMR would set the
    literal text `EMR.secret@arn:...` as the password."""
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:m"
    env = {**DEPLOY_ENV, "SENSORPIPE_METASTORE_KIND": "jdbc",
           "SENSORPIPE_METASTORE_SECRET_ARN": arn,
           "SENSORPIPE_METASTORE_JDBC_URL": "jdbc:postgresql://m.test:5432/h?sslmode=verify-full"}
    deploy = load_settings(ROOT / "conf/deploy.yaml", environ=env, kind=DeploySettings)
    plan = build_plan(deploy, project_copy(tmp_path), "v1", date(2026, 11, 1), "batch")
    (hive,) = [c["Properties"] for c in plan.run_job_flow["Configurations"]
               if c["Classification"] == "spark-hive-site"]  # fmt: skip
    secret_keys = {k: v for k, v in hive.items() if k.startswith("EMR.secret@")}
    assert secret_keys == {"EMR.secret@javax.jdo.option.ConnectionPassword": arn}
    assert not any("EMR.secret@" in v for v in hive.values())
