"""`sensorpipe deploy`: artifacts and bootstrap scripts to S3, then steps onto a running EMR
cluster or a new cluster with everything it needs.

    plan = build_plan(settings, ROOT, code_version, day)     # pure: what would be done
    result = execute(plan, s3_client, emr_client, cluster_id=None)

The plan fills every `{{PLACEHOLDER}}` in emr-steps.json and conf/emr/*.json from the deploy
settings (an unfilled one is an error naming it), turns the CLI-shaped steps into the API's
`HadoopJarStep` shape the way `aws emr add-steps` does, and, for a new cluster, builds the
RunJobFlow request: release, applications, configurations (spark-defaults, spark-env,
delta-defaults, and spark-hive-site/hive-site for Glue or a JDBC metastore), the security
configuration (Kerberos with a cross-realm trust, SSE-KMS, local disk encryption, TLS,
Ranger), Kerberos attributes, bootstrap actions, steps and the log URI.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sensorpipe.config import DeploySettings
from sensorpipe.secrets import secret_value

_PLACEHOLDER = re.compile(r"\{\{([A-Z0-9_]+)\}\}")
REDACTED = "***"


class DeployError(RuntimeError):
    """The deployment cannot be planned or carried out; the message says what is missing."""


def stack_outputs(cloudformation: Any, prefix: str) -> dict[str, str]:
    """The outputs of the estate's stacks (infra/, named `<prefix>-...`), by output key, read
    with CloudFormation's DescribeStacks."""
    found: dict[str, dict[str, str]] = {}
    for page in cloudformation.get_paginator("describe_stacks").paginate():
        for stack in page["Stacks"]:
            if stack["StackName"].startswith(f"{prefix}-"):
                found[stack["StackName"]] = {
                    o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])
                }
    if not found:
        raise DeployError(
            f"no CloudFormation stack named {prefix}-*: deploy the estate first (docs/estate.md)"
        )
    return merge_outputs(found)


def outputs_from_file(path: str | Path) -> dict[str, str]:
    """Outputs as `cdk deploy --outputs-file` writes them ({stack: {key: value}}): a dry run
    needs no AWS account."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DeployError(f"stack outputs file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DeployError(f"stack outputs file {path}: expected {{stack: {{output: value}}}}")
    return merge_outputs(data)


def merge_outputs(by_stack: dict[str, dict[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for stack, outputs in sorted(by_stack.items()):
        for key, value in outputs.items():
            if key in merged and merged[key] != value:
                raise DeployError(f"output {key} differs between stacks ({stack})")
            merged[key] = str(value)
    return merged


def fill(text: str, values: dict[str, str], where: str) -> str:
    missing = sorted({m for m in _PLACEHOLDER.findall(text) if m not in values})
    if missing:
        raise DeployError(f"{where}: no value for placeholder(s) {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def cli_steps_to_api(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What `aws emr add-steps --steps file://...` sends: Spark steps run spark-submit through
    command-runner.jar; CUSTOM_JAR steps name their jar."""
    api = []
    for step in steps:
        if step["Type"].upper() == "SPARK":
            jar_step = {"Jar": "command-runner.jar", "Args": ["spark-submit", *step["Args"]]}
        elif step["Type"].upper() == "CUSTOM_JAR":
            jar_step = {"Jar": step["Jar"], "Args": list(step.get("Args", []))}
            if step.get("MainClass"):
                jar_step["MainClass"] = step["MainClass"]
        else:
            raise DeployError(f"step {step['Name']!r}: type {step['Type']} is not supported")
        api.append(
            {
                "Name": step["Name"],
                "ActionOnFailure": step.get("ActionOnFailure", "CONTINUE"),
                "HadoopJarStep": jar_step,
            }
        )
    return api


def _with_step_environment(
    steps: list[dict[str, Any]], environment: dict[str, str]
) -> list[dict[str, Any]]:
    """Each Spark step's driver gets the deploy's step environment (cluster mode: the YARN
    application master's environment)."""
    confs = []
    for key, value in sorted(environment.items()):
        confs += ["--conf", f"spark.yarn.appMasterEnv.{key}={value}"]
    out = []
    for step in steps:
        step = dict(step)
        if step["Type"].upper() == "SPARK":
            args = list(step["Args"])
            at = args.index("--deploy-mode") + 2 if "--deploy-mode" in args else 0
            step["Args"] = args[:at] + confs + args[at:]
        out.append(step)
    return out


@dataclass
class Upload:
    local: Path
    key: str


@dataclass
class DeployPlan:
    artifacts_uri: str
    uploads: list[Upload]
    steps: list[dict[str, Any]]  # API shape
    security_configuration_name: str
    security_configuration: dict[str, Any]
    run_job_flow: dict[str, Any]  # without secrets: see `with_secrets`
    notes: list[str] = field(default_factory=list)


def placeholder_values(settings: DeploySettings, code_version: str, day: date) -> dict[str, str]:
    s, c, m = settings.security, settings.cluster, settings.metastore
    artifacts = f"s3://{settings.bucket}/{settings.artifacts_prefix}/{code_version}"
    return {
        "ARTIFACTS_URI": artifacts,
        "BUCKET": settings.bucket,
        "PROTECTED_BUCKET": settings.protected_bucket,
        "DATE": day.isoformat(),
        "CODE_VERSION": code_version,
        "JOBS_PRINCIPAL": f"{c.jobs_principal}@{c.kerberos_realm}",
        "JOBS_KEYTAB": c.jobs_keytab,
        "KMS_KEY_ARN": s.kms_key_arn,
        "TLS_CERTIFICATES_URI": s.tls_certificates_uri,
        "TRUSTED_REALM": s.trusted_realm,
        "TRUSTED_DOMAIN": s.trusted_domain,
        "TRUSTED_KDC": s.trusted_kdc,
        "TRUSTED_ADMIN_SERVER": s.trusted_admin_server,
        "RANGER_ADMIN_URL": s.ranger_admin_url,
        "RANGER_ADMIN_SECRET_ARN": s.ranger_admin_secret_arn,
        "RANGER_PLUGIN_ROLE_ARN": s.ranger_plugin_role_arn,
        "RANGER_OTHER_SERVICES_ROLE_ARN": s.ranger_other_services_role_arn,
        "RANGER_SPARK_CLIENT_SECRET_ARN": s.ranger_spark_client_secret_arn,
        "RANGER_HIVE_CLIENT_SECRET_ARN": s.ranger_hive_client_secret_arn,
        "RANGER_AUDIT_LOG_GROUP_ARN": s.ranger_audit_log_group_arn,
        "METASTORE_JDBC_URL": m.jdbc_url or "",
        "METASTORE_USER": m.user or "",
    }


def _json_file(path: Path, values: dict[str, str]) -> Any:
    return json.loads(fill(path.read_text(), values, str(path)))


def _bootstrap_actions(
    settings: DeploySettings, artifacts: str, wheel: str
) -> list[dict[str, Any]]:
    c, s, m = settings.cluster, settings.security, settings.metastore
    bootstrap = f"{artifacts}/bootstrap"

    def action(name: str, script: str, args: list[str]) -> dict[str, Any]:
        return {
            "Name": name,
            "ScriptBootstrapAction": {"Path": f"{bootstrap}/{script}", "Args": args},
        }

    actions = [
        action("sensorpipe dependencies", "install_dependencies.sh", [f"{artifacts}/{wheel}"]),
        action(
            "sensorpipe Kerberos client and jobs keytab",
            "kerberos.sh",
            [
                "--realm",
                c.kerberos_realm,
                "--trusted-realm",
                s.trusted_realm,
                "--trusted-domain",
                s.trusted_domain,
                "--trusted-kdc",
                s.trusted_kdc,
                "--trusted-admin-server",
                s.trusted_admin_server,
                "--principal",
                c.jobs_principal,
                "--keytab",
                c.jobs_keytab,
                "--background",
            ],
        ),  # fmt: skip
    ]
    if m.kind == "jdbc":
        actions.append(
            action(
                "sensorpipe external Hive metastore",
                "metastore.sh",
                [
                    "--jdbc-url",
                    str(m.jdbc_url),
                    "--user",
                    str(m.user),
                    "--password-secret-id",
                    str(m.password_secret_id),
                    "--region",
                    settings.region,
                    "--background",
                ],
            )  # fmt: skip
        )
    else:
        actions.append(
            action("sensorpipe Glue Data Catalog", "metastore.sh", ["--glue", "--background"])
        )
    return actions


def build_plan(
    settings: DeploySettings, root: Path, code_version: str, day: date, wheel: str | None = None
) -> DeployPlan:
    values = placeholder_values(settings, code_version, day)
    artifacts = values["ARTIFACTS_URI"]
    prefix = artifacts.split("/", 3)[3]
    dist = root / "dist"
    if wheel is None:
        wheels = sorted(dist.glob("sensorpipe-*.whl"))
        if not wheels:
            raise DeployError(
                f"no wheel in {dist}: run `make dist` (or deploy without --skip-build)"
            )
        wheel = wheels[-1].name
    uploads = [
        Upload(dist / wheel, f"{prefix}/{wheel}"),
        Upload(dist / "sensorpipe.zip", f"{prefix}/sensorpipe.zip"),
        Upload(dist / "sensorpipe-deps.tar.gz", f"{prefix}/sensorpipe-deps.tar.gz"),
        Upload(Path(settings.jdbc_driver_jar), f"{prefix}/jars/postgresql.jar"),
    ]
    uploads += [Upload(p, f"{prefix}/jobs/{p.name}") for p in sorted((root / "jobs").glob("*.py"))]
    uploads += [
        Upload(p, f"{prefix}/conf/{p.name}") for p in sorted((root / "conf").glob("*.yaml"))
    ]
    uploads += [
        Upload(p, f"{prefix}/bootstrap/{p.name}")
        for p in sorted((root / "bootstrap").iterdir())
        if p.suffix in (".sh", ".py")
    ]
    uploads += [
        Upload(p, f"{prefix}/conf/ranger/{p.name}")
        for p in sorted((root / "conf/ranger").glob("*.json"))
    ]
    missing = [str(u.local) for u in uploads if not u.local.is_file()]
    if missing:
        raise DeployError(f"missing artifact(s): {', '.join(missing)}")

    cli_steps = _with_step_environment(
        _json_file(root / "emr-steps.json", values), settings.step_environment
    )
    steps = cli_steps_to_api(cli_steps)
    configurations = _json_file(root / "conf/emr/configurations.json", values)
    configurations += _json_file(
        root / f"conf/emr/metastore-{settings.metastore.kind}.json", values
    )
    security = _json_file(root / "conf/emr/security-configuration.json", values)
    c = settings.cluster
    instances: dict[str, Any] = {
        "InstanceGroups": [
            {"Name": "primary", "InstanceRole": "MASTER", "InstanceType": c.primary_instance_type,
             "InstanceCount": 1},
            {"Name": "core", "InstanceRole": "CORE", "InstanceType": c.core_instance_type,
             "InstanceCount": c.core_instance_count},
        ],
        "KeepJobFlowAliveWhenNoSteps": True,  # the streaming job runs as a step
        "TerminationProtected": False,
    }  # fmt: skip
    if c.ec2_subnet_id:
        instances["Ec2SubnetId"] = c.ec2_subnet_id
    if c.ec2_key_name:
        instances["Ec2KeyName"] = c.ec2_key_name
    request = {
        "Name": c.name,
        "LogUri": settings.log_uri,
        "ReleaseLabel": c.release_label,
        "Applications": [{"Name": a.strip()} for a in c.applications.split(",") if a.strip()],
        "Instances": instances,
        "Configurations": configurations,
        "SecurityConfiguration": c.security_configuration,
        "KerberosAttributes": {
            "Realm": c.kerberos_realm,
            "KdcAdminPassword": REDACTED,
            "CrossRealmTrustPrincipalPassword": REDACTED,
        },
        "BootstrapActions": _bootstrap_actions(settings, artifacts, wheel),
        "Steps": steps,
        "JobFlowRole": c.instance_profile,
        "ServiceRole": c.service_role,
        "VisibleToAllUsers": True,
        "StepConcurrencyLevel": 4,  # the streaming step runs beside the batch steps
        "Tags": [{"Key": "project", "Value": "sensorpipe"},
                 {"Key": "code-version", "Value": code_version}],
    }  # fmt: skip
    return DeployPlan(artifacts, uploads, steps, c.security_configuration, security, request)


def with_secrets(request: dict[str, Any], settings: DeploySettings) -> dict[str, Any]:
    """The request with the Kerberos passwords read from the environment (never printed)."""
    c = settings.cluster
    kerberos = dict(request["KerberosAttributes"])
    kerberos["KdcAdminPassword"] = secret_value(
        "cluster.kdc_admin_password_env", c.kdc_admin_password_env
    )
    kerberos["CrossRealmTrustPrincipalPassword"] = secret_value(
        "cluster.cross_realm_trust_password_env", c.cross_realm_trust_password_env
    )
    return {**request, "KerberosAttributes": kerberos}


@dataclass
class DeployResult:
    uploaded: list[str]
    security_configuration: str  # "created" | "exists"
    cluster_id: str
    created_cluster: bool
    step_ids: list[str]


def execute(
    plan: DeployPlan,
    settings: DeploySettings,
    s3: Any,
    emr: Any,
    cluster_id: str | None = None,
) -> DeployResult:
    uploaded = []
    for upload in plan.uploads:
        s3.upload_file(str(upload.local), settings.bucket, upload.key)
        uploaded.append(f"s3://{settings.bucket}/{upload.key}")
    if cluster_id:
        response = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=plan.steps)
        return DeployResult(uploaded, "unchanged", cluster_id, False, response["StepIds"])
    from botocore.exceptions import ClientError

    state = "exists"
    try:
        emr.describe_security_configuration(Name=plan.security_configuration_name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("InvalidRequestException", "ResourceNotFound"):
            raise
        # Security configurations are immutable in EMR: an existing one is used as it is.
        emr.create_security_configuration(
            Name=plan.security_configuration_name,
            SecurityConfiguration=json.dumps(plan.security_configuration),
        )
        state = "created"
    response = emr.run_job_flow(**with_secrets(plan.run_job_flow, settings))
    new_id = response["JobFlowId"]
    steps = emr.list_steps(ClusterId=new_id)["Steps"]
    return DeployResult(uploaded, state, new_id, True, [s["Id"] for s in steps])


def render(plan: DeployPlan, result: DeployResult | None) -> str:
    lines = [f"artifacts: {plan.artifacts_uri}"]
    if result is None:
        lines.append("dry run: nothing uploaded or created. Would upload:")
        lines += [f"  {u.local} -> {u.key}" for u in plan.uploads]
        lines.append("and send this RunJobFlow request (passwords redacted):")
        lines.append(json.dumps(plan.run_job_flow, indent=1))
        return "\n".join(lines)
    lines.append(f"uploaded {len(result.uploaded)} files")
    if result.created_cluster:
        lines.append(
            f"security configuration {plan.security_configuration_name}: "
            f"{result.security_configuration}"
        )
        lines.append(
            f"created cluster {result.cluster_id} ({plan.run_job_flow['ReleaseLabel']}, "
            f"{len(plan.run_job_flow['Configurations'])} configurations, "
            f"{len(plan.run_job_flow['BootstrapActions'])} bootstrap actions)"
        )
    else:
        lines.append(f"added steps to cluster {result.cluster_id}")
    for step, step_id in zip(plan.steps, result.step_ids, strict=False):
        lines.append(f"  step {step_id}: {step['Name']}")
    return "\n".join(lines)


def project_root() -> Path:
    return Path(os.environ.get("SENSORPIPE_ROOT", Path(__file__).resolve().parents[2]))
