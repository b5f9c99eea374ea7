"""`sensorpipe deploy`: artifacts and scripts to S3, then a cluster of one of two kinds, or
steps onto a running one.

    plan = build_plan(settings, ROOT, code_version, day, "batch")   # pure: what would be done
    result = execute(plan, settings, s3_client, emr_client, cluster_id=None)

Three kinds of cluster, because the streaming steps never end, the batch steps depend on each
other, and the protected zone's device stream keeps PHI off shared nodes (docs/emr.md):
- `stream`: long-running; the keytab step, then the train streaming step, submitted once per
  cluster; a later deploy to it adds nothing unless told to restart an ended stream.
- `hospital-stream`: the same for the hospital's device stream, on nodes of its own.
- `batch`: one step at a time (StepConcurrencyLevel 1) in the order of emr-steps.json (ingest
  before the snapshot, the committed-files manifest before S3DistCp before compaction);
  CANCEL_AND_WAIT stops the day at its first failure; managed scaling, and auto-termination
  once idle.

Every step runs with its family's runtime role: RunJobFlow carries no step, and the steps go
in file order through one AddJobFlowSteps per run of steps of one family, each with that
family's `ExecutionRoleArn` (the field is per request, not per step).

The plan parses the steps files and conf/emr/*.json first and then fills every
`{{PLACEHOLDER}}` inside their string values from the deploy settings (an unfilled one is an
error naming it; a value holding a quote stays one value), turns the CLI-shaped steps into the
API's `HadoopJarStep` shape the way `aws emr add-steps` does (tests/test_emr_deploy.py compares
the two), and refuses a plan that names any region other than the deployment's. The security
configuration is named by a hash of its content.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

from sensorpipe.config import DeploySettings
from sensorpipe.secrets import secret_value

_PLACEHOLDER = re.compile(r"\{\{([A-Z0-9_]+)\}\}")
REDACTED = "***"
ClusterKind = Literal["stream", "hospital-stream", "batch"]
STEPS_FILES: dict[str, str] = {
    "stream": "emr-streaming-steps.json",
    "hospital-stream": "emr-hospital-streaming-steps.json",
    "batch": "emr-steps.json",
}
STREAM_KINDS = ("stream", "hospital-stream")
KEYTAB_STEP = "sensorpipe jobs keytab"
HDFS_HOME_STEP = "sensorpipe jobs HDFS home"
# Once per cluster, before the jobs, and only with Kerberos (without it the steps run as
# hadoop, whose HDFS home EMR makes).
SETUP_STEPS = (KEYTAB_STEP, HDFS_HOME_STEP)
STREAMING_STEP = "sensorpipe stream_sensor_anomalies"
HOSPITAL_STREAMING_STEP = "sensorpipe hospital device stream"
STREAMING_STEPS = (STREAMING_STEP, HOSPITAL_STREAMING_STEP)
# The job configurations of the hospital (protected zone): their steps run as the hospital role.
HOSPITAL_CONFIGS = ("health-emr.yaml", "hospital-stream-emr.yaml")
# What RunJobFlow returns, standing for the new cluster's id in a dry run's AddJobFlowSteps.
NEW_CLUSTER_ID = "j-FROM-RUNJOBFLOW"
# AWS region names as they appear in endpoints, jar buckets and ARNs.
_REGION_NAME = re.compile(
    r"(?<![a-z0-9-])(?:us|eu|ap|sa|ca|me|af|il|mx|cn)(?:-gov|-iso[a-z]?)?"
    r"-(?:north|south|east|west|central|northeast|southeast|northwest|southwest)-\d(?![0-9])"
)
ACTIVE_STEP_STATES = ("PENDING", "CANCEL_PENDING", "RUNNING")
# What `make dist` records about the dependency archive it built.
BUILD_INFO = "BUILD-INFO.json"
_MACHINE_ARCHITECTURE = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64",
                         "arm64": "arm64"}  # fmt: skip


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


def fill(data: Any, values: dict[str, str], where: str) -> Any:
    """`data` (parsed JSON) with each `{{NAME}}` inside its string values replaced by
    `values[NAME]`. Substituted after parsing, so a value is only ever a value: a quote, a
    comma or a brace in it cannot add an argument or a field."""
    missing: set[str] = set()

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            missing.update(m for m in _PLACEHOLDER.findall(item) if m not in values)
            return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), item)
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        return item

    filled = walk(data)
    if missing:
        raise DeployError(f"{where}: no value for placeholder(s) {', '.join(sorted(missing))}")
    return filled


def regions_named(data: Any) -> set[str]:
    """Every AWS region named in a string of `data` (endpoints, jar buckets, ARNs)."""
    text = json.dumps(data)
    return set(_REGION_NAME.findall(text))


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
    steps: list[dict[str, Any]], environment: dict[str, str], region: str
) -> list[dict[str, Any]]:
    """Each Spark step's driver gets the deploy's step environment (cluster mode: the YARN
    application master's environment), and the driver and the executors get the deployment's
    region (AWS_REGION, AWS_DEFAULT_REGION): the jobs' configurations have no region of their
    own, and the executors' AWS clients (the Kinesis reader, the alerts) take it from there.
    An empty value (an optional output the estate did not give) is left out."""
    confs = []
    for key, value in sorted(environment.items()):
        if value:
            confs += ["--conf", f"spark.yarn.appMasterEnv.{key}={value}"]
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        confs += ["--conf", f"spark.yarn.appMasterEnv.{key}={region}",
                  "--conf", f"spark.executorEnv.{key}={region}"]  # fmt: skip
    out = []
    for step in steps:
        step = dict(step)
        if step["Type"].upper() == "SPARK":
            args = list(step["Args"])
            at = args.index("--deploy-mode") + 2 if "--deploy-mode" in args else 0
            step["Args"] = args[:at] + confs + args[at:]
        out.append(step)
    return out


def step_family(steps: list[dict[str, Any]], index: int) -> str:
    """The job family whose runtime role runs step `index`: a Spark step's from its job and
    configuration (the hospital's configurations: hospital; the streaming job on the trains'
    configuration: streaming; the rest: batch); a step that is not Spark (the keytab, S3DistCp)
    serves the Spark step after it and runs with that one's role."""
    for step in steps[index:]:
        if step["Type"].upper() != "SPARK":
            continue
        args = step["Args"]
        config = Path(args[args.index("--config") + 1]).name if "--config" in args else ""
        job = next((Path(a).name for a in args if a.endswith(".py")), "")
        if config in HOSPITAL_CONFIGS:
            return "hospital"
        return "streaming" if job == "stream_sensor_anomalies.py" else "batch"
    raise DeployError(
        f"step {steps[index]['Name']!r}: no Spark step follows it to take a runtime role from"
    )


def step_requests(
    steps: list[dict[str, Any]], roles: dict[str, str], cluster_id: str
) -> list[dict[str, Any]]:
    """AddJobFlowSteps requests for `steps` (API shape) in order: one per run of consecutive
    steps with the same runtime role (`roles`: step name -> role ARN)."""
    requests: list[dict[str, Any]] = []
    for step in steps:
        role = roles[step["Name"]]
        if requests and requests[-1]["ExecutionRoleArn"] == role:
            requests[-1]["Steps"].append(step)
        else:
            requests.append({"JobFlowId": cluster_id, "ExecutionRoleArn": role, "Steps": [step]})
    return requests


@dataclass
class Upload:
    local: Path
    key: str


@dataclass
class DeployPlan:
    kind: ClusterKind
    artifacts_uri: str
    uploads: list[Upload]
    steps_cli: list[dict[str, Any]]  # the steps file's shape, filled
    steps: list[dict[str, Any]]  # API shape, in order
    step_roles: dict[str, str]  # step name -> the runtime role it is submitted with
    security_configuration_name: str
    security_configuration: dict[str, Any]
    run_job_flow: dict[str, Any]  # without secrets: see `with_secrets`; no steps
    notes: list[str] = field(default_factory=list)

    def step_requests(self, cluster_id: str = NEW_CLUSTER_ID) -> list[dict[str, Any]]:
        """The AddJobFlowSteps requests that submit every step of the plan, in order."""
        return step_requests(self.steps, self.step_roles, cluster_id)


def placeholder_values(settings: DeploySettings, code_version: str, day: date) -> dict[str, str]:
    s, c, m = settings.security, settings.cluster, settings.metastore
    artifacts = f"s3://{settings.bucket}/{settings.artifacts_prefix}/{code_version}"
    return {
        "ARTIFACTS_URI": artifacts,
        "BUCKET": settings.bucket,
        "PROTECTED_BUCKET": settings.protected_bucket,
        "REGION": settings.region,
        "DATE": day.isoformat(),
        "COMPACTION_DATE": (day - timedelta(days=c.compaction_delay_days)).isoformat(),
        "CODE_VERSION": code_version,
        "JOBS_PRINCIPAL": f"{c.jobs_principal}@{c.kerberos_realm}",
        "JOBS_KEYTAB": c.jobs_keytab,
        "STEP_USER": c.step_user,
        "KMS_KEY_ARN": s.kms_key_arn,
        "TLS_CERTIFICATES_URI": s.tls_certificates_uri,
        "TRUSTED_REALM": s.trusted_realm,
        "TRUSTED_DOMAIN": s.trusted_domain,
        "TRUSTED_KDC": s.trusted_kdc,
        "TRUSTED_ADMIN_SERVER": s.trusted_admin_server,
        "METASTORE_JDBC_URL": m.jdbc_url or "",
        "METASTORE_USER": m.user or "",
        "METASTORE_PASSWORD_SECRET_ARN": m.password_secret_arn or "",
    }


def _json_file(path: Path, values: dict[str, str]) -> Any:
    return fill(json.loads(path.read_text()), values, str(path))


def security_configuration(
    settings: DeploySettings, root: Path, values: dict[str, str], kind: ClusterKind = "batch"
) -> tuple[str, dict[str, Any]]:
    """The security configuration document and its name, `<prefix>-<hash of the document>`:
    EMR's security configurations cannot be changed, so a changed document gets a new name
    and the new cluster uses it. Application-scoped IAM roles (runtime roles) with source
    identity propagation always; Lake Formation's fine-grained access only on the batch
    cluster in `lake-formation` mode: it does not cover Spark streaming or custom data sources,
    so a stream cluster with it would refuse the streaming job's Kinesis source."""
    document = _json_file(root / "conf/emr/security-configuration.json", values)
    if settings.security.kerberos == "none":
        del document["AuthenticationConfiguration"]
    authorization = document["AuthorizationConfiguration"]
    if settings.security.authorization != "lake-formation" or kind in STREAM_KINDS:
        del authorization["LakeFormationConfiguration"]
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return f"{settings.cluster.security_configuration_prefix}-{digest}", document


def _without_kerberos(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """No KDC: no keytab or HDFS home step, and spark-submit without --principal/--keytab."""
    out = []
    for step in steps:
        if step["Name"] in SETUP_STEPS:
            continue
        args, kept, skip = step["Args"], [], False
        for arg in args:
            if skip:
                skip = False
            elif step["Type"].upper() == "SPARK" and arg in ("--principal", "--keytab"):
                skip = True
            else:
                kept.append(arg)
        out.append({**step, "Args": kept})
    return out


def plan_steps(
    settings: DeploySettings, root: Path, values: dict[str, str], kind: ClusterKind
) -> list[dict[str, Any]]:
    """The steps of a cluster kind in the steps file's (CLI) shape, filled, in file order."""
    steps = _json_file(root / STEPS_FILES[kind], values)
    if settings.security.kerberos == "none":
        steps = _without_kerberos(steps)
    return _with_step_environment(steps, settings.step_environment, settings.region)


def dist_architecture(dist: Path) -> str:
    """The architecture `make dist` built the dependency archive for (dist/BUILD-INFO.json)."""
    try:
        machine = json.loads((dist / BUILD_INFO).read_text())["machine"]
    except (OSError, ValueError, KeyError):
        raise DeployError(f"no {dist / BUILD_INFO}: run `make dist`") from None
    return _MACHINE_ARCHITECTURE.get(machine.lower(), machine)


def _bootstrap_actions(settings: DeploySettings, artifacts: str, wheel: str) -> list[dict]:
    """What must be on every node before the applications: the jobs' Linux user (YARN runs a
    Kerberos user's containers as that Linux user, on every node) and, only if configured, the
    wheel. Nothing here does what the security configuration does (krb5.conf, the KDC, TLS)."""
    c = settings.cluster
    script = f"{artifacts}/bootstrap/sensorpipe_node.sh"
    actions = []
    if settings.security.kerberos != "none":
        actions.append({
            "Name": "sensorpipe jobs user",
            "ScriptBootstrapAction": {"Path": script, "Args": [
                "user", "--user", c.jobs_principal, "--keytab", c.jobs_keytab,
                "--step-user", c.step_user]},
        })  # fmt: skip
    if c.install_wheel_on_nodes:
        actions.append({
            "Name": "sensorpipe wheel",
            "ScriptBootstrapAction": {"Path": script, "Args": ["wheel", f"{artifacts}/{wheel}"]},
        })  # fmt: skip
    return actions


def _uploads(settings: DeploySettings, root: Path, prefix: str, wheel: str) -> list[Upload]:
    dist = root / "dist"
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
        Upload(p, f"{prefix}/{p.relative_to(root).as_posix()}")
        for folder in ("conf/ranger", "conf/lakeformation", "conf/emr")
        for p in sorted((root / folder).rglob("*.json"))
    ]
    missing = [str(u.local) for u in uploads if not u.local.is_file()]
    if missing:
        raise DeployError(f"missing artifact(s): {', '.join(missing)}")
    return uploads


def build_plan(
    settings: DeploySettings,
    root: Path,
    code_version: str,
    day: date,
    kind: ClusterKind = "batch",
    wheel: str | None = None,
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
    c = settings.cluster
    built_for = dist_architecture(dist)
    if built_for != c.architecture:
        raise DeployError(
            f"the dependency archive was built for {built_for} but cluster.core_instance_type "
            f"{c.core_instance_type} is {c.architecture}: build on {c.architecture} "
            f"(docs/emr.md) or choose {built_for} instances"
        )
    uploads = _uploads(settings, root, prefix, wheel)
    cli_steps = plan_steps(settings, root, values, kind)
    steps = cli_steps_to_api(cli_steps)
    role_of_family = {
        "streaming": settings.runtime_roles.streaming,
        "batch": settings.runtime_roles.batch,
        "hospital": settings.runtime_roles.hospital,
    }
    roles = {s["Name"]: role_of_family[step_family(cli_steps, i)] for i, s in enumerate(cli_steps)}
    configurations = _json_file(root / "conf/emr/configurations.json", values)
    configurations += _json_file(
        root / f"conf/emr/metastore-{settings.metastore.kind}.json", values
    )
    security_name, security = security_configuration(settings, root, values, kind)
    instances: dict[str, Any] = {
        "InstanceGroups": [
            {"Name": "primary", "InstanceRole": "MASTER", "InstanceType": c.primary_instance_type,
             "InstanceCount": 1},
            {"Name": "core", "InstanceRole": "CORE", "InstanceType": c.core_instance_type,
             "InstanceCount": c.core_instance_count},
        ],
        # Both stay up without steps: the stream's cluster runs its step for ever, the batch
        # cluster waits for the next day's steps until the auto-termination policy ends it.
        "KeepJobFlowAliveWhenNoSteps": True,
        "TerminationProtected": False,
        "Ec2SubnetId": c.ec2_subnet_id,
        # The estate's groups: the warehouse and the endpoints admit these, not EMR's own.
        "EmrManagedMasterSecurityGroup": c.primary_security_group,
        "EmrManagedSlaveSecurityGroup": c.core_security_group,
        "ServiceAccessSecurityGroup": c.service_access_security_group,
    }  # fmt: skip
    if c.additional_primary_security_groups:
        instances["AdditionalMasterSecurityGroups"] = list(c.additional_primary_security_groups)
    if c.additional_core_security_groups:
        instances["AdditionalSlaveSecurityGroups"] = list(c.additional_core_security_groups)
    if c.ec2_key_name:
        instances["Ec2KeyName"] = c.ec2_key_name
    request: dict[str, Any] = {
        "Name": f"{c.name}-{kind}",
        "LogUri": settings.log_uri,
        "ReleaseLabel": c.release_label,
        "Applications": [{"Name": a} for a in c.application_names],
        "Instances": instances,
        "Configurations": configurations,
        "SecurityConfiguration": security_name,
        "BootstrapActions": _bootstrap_actions(settings, artifacts, wheel),
        # No steps here: each goes with its runtime role through AddJobFlowSteps (a cluster
        # with application-scoped roles refuses a step without one).
        "JobFlowRole": c.instance_profile,
        "ServiceRole": c.service_role,
        "VisibleToAllUsers": True,
        # One step at a time on all: the batch steps in file order; on a stream cluster the
        # keytab step completes before the streaming step starts.
        "StepConcurrencyLevel": 1,
        "Tags": [{"Key": "project", "Value": "sensorpipe"},
                 {"Key": "sensorpipe:cluster", "Value": kind},
                 {"Key": "code-version", "Value": code_version}],
    }  # fmt: skip
    if settings.security.kerberos != "none":
        request["KerberosAttributes"] = {
            "Realm": c.kerberos_realm,
            "KdcAdminPassword": REDACTED,
            "CrossRealmTrustPrincipalPassword": REDACTED,
        }
    if kind == "batch":
        request["ManagedScalingPolicy"] = {
            "ComputeLimits": {
                "UnitType": "Instances",
                "MinimumCapacityUnits": c.batch_min_capacity,
                "MaximumCapacityUnits": c.batch_max_capacity,
            }
        }
        request["AutoTerminationPolicy"] = {"IdleTimeout": c.batch_idle_timeout_seconds}
    plan = DeployPlan(
        kind, artifacts, uploads, cli_steps, steps, roles, security_name, security, request,
        notes=[f"dependency archive built for {built_for}"],
    )  # fmt: skip
    others = regions_named([request, security, plan.step_requests()]) - {settings.region}
    if others:
        raise DeployError(
            f"the plan for region {settings.region} names {', '.join(sorted(others))}: every "
            "endpoint, jar and ARN must be in the deployment's region (check the stack outputs "
            "and AWS_REGION)"
        )
    return plan


def with_secrets(request: dict[str, Any], settings: DeploySettings) -> dict[str, Any]:
    """The request with the Kerberos passwords read from the environment (never printed)."""
    if "KerberosAttributes" not in request:
        return request
    c = settings.cluster
    kerberos = dict(request["KerberosAttributes"])
    kerberos["KdcAdminPassword"] = secret_value(
        "cluster.kdc_admin_password_env", c.kdc_admin_password_env
    )
    kerberos["CrossRealmTrustPrincipalPassword"] = secret_value(
        "cluster.cross_realm_trust_password_env", c.cross_realm_trust_password_env
    )
    return {**request, "KerberosAttributes": kerberos}


def steps_to_add(
    plan: DeployPlan, existing: list[dict[str, Any]], restart_stream: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """The plan's steps a running cluster still needs, given its steps (ListSteps), and why
    the others are left out. A streaming step is submitted once per cluster: never while one
    is pending or running (two streams on one checkpoint), and after one ended only when
    asked to restart it. The setup steps (keytab, HDFS home) run once, unless they never
    completed."""
    by_name: dict[str, list[str]] = {}
    for step in existing:
        by_name.setdefault(step["Name"], []).append(step["Status"]["State"])
    keep, skipped = [], []
    for step in plan.steps:
        states = by_name.get(step["Name"], [])
        if step["Name"] in STREAMING_STEPS and states:
            active = [s for s in states if s in ACTIVE_STEP_STATES]
            if active or not restart_stream:
                skipped.append(
                    f"{step['Name']}: already on the cluster ({', '.join(states)}); "
                    + ("one stream per checkpoint" if active else "--restart-stream to restart")
                )
                continue
        if step["Name"] in SETUP_STEPS and any(
            s in ("COMPLETED", *ACTIVE_STEP_STATES) for s in states
        ):
            skipped.append(f"{step['Name']}: already on the cluster")
            continue
        keep.append(step)
    if all(s["Name"] in SETUP_STEPS for s in keep):
        keep = []  # a setup step that never completed is retried with the jobs, not alone
    return keep, skipped


def add_steps_requests(
    plan: DeployPlan, emr: Any, cluster_id: str, restart_stream: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """AddJobFlowSteps requests (one per runtime role, in order) for a running cluster of the
    plan's kind (read-only calls only)."""
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    kind = {t["Key"]: t["Value"] for t in cluster.get("Tags", [])}.get("sensorpipe:cluster")
    if kind and kind != plan.kind:
        raise DeployError(f"cluster {cluster_id} is a {kind} cluster, not {plan.kind}")
    if plan.kind == "batch" and cluster.get("StepConcurrencyLevel", 1) != 1:
        raise DeployError(
            f"cluster {cluster_id} runs {cluster['StepConcurrencyLevel']} steps at once: the "
            "batch steps depend on each other and need StepConcurrencyLevel 1"
        )
    existing = []
    for page in emr.get_paginator("list_steps").paginate(ClusterId=cluster_id):
        existing += page["Steps"]
    steps, skipped = steps_to_add(plan, existing, restart_stream)
    return step_requests(steps, plan.step_roles, cluster_id), skipped


@dataclass
class DeployResult:
    uploaded: list[str]
    security_configuration: str  # "created" | "exists" | "unchanged"
    cluster_id: str
    created_cluster: bool
    step_ids: list[str]
    step_names: list[str]
    skipped: list[str] = field(default_factory=list)


def execute(
    plan: DeployPlan,
    settings: DeploySettings,
    s3: Any,
    emr: Any,
    cluster_id: str | None = None,
    restart_stream: bool = False,
) -> DeployResult:
    uploaded = []
    for upload in plan.uploads:
        s3.upload_file(str(upload.local), settings.bucket, upload.key)
        uploaded.append(f"s3://{settings.bucket}/{upload.key}")
    if cluster_id:
        requests, skipped = add_steps_requests(plan, emr, cluster_id, restart_stream)
        ids, names = _submit(emr, requests)
        return DeployResult(uploaded, "unchanged", cluster_id, False, ids, names, skipped)
    from botocore.exceptions import ClientError

    state = "exists"
    try:
        emr.describe_security_configuration(Name=plan.security_configuration_name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("InvalidRequestException", "ResourceNotFound"):
            raise
        emr.create_security_configuration(
            Name=plan.security_configuration_name,
            SecurityConfiguration=json.dumps(plan.security_configuration),
        )
        state = "created"
    response = emr.run_job_flow(**with_secrets(plan.run_job_flow, settings))
    new_id = response["JobFlowId"]
    ids, names = _submit(emr, plan.step_requests(new_id))
    return DeployResult(uploaded, state, new_id, True, ids, names)


def _submit(emr: Any, requests: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """AddJobFlowSteps, one request at a time (their order is the steps' order)."""
    ids: list[str] = []
    names: list[str] = []
    for request in requests:
        ids += emr.add_job_flow_steps(**request)["StepIds"]
        names += [s["Name"] for s in request["Steps"]]
    return ids, names


def dry_run_requests(
    plan: DeployPlan, add_steps: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The requests a deploy would send, by API operation (`deploy --dry-run --json`),
    passwords redacted; for a new cluster the AddJobFlowSteps name it NEW_CLUSTER_ID."""
    if add_steps is not None:
        return {"AddJobFlowSteps": add_steps}
    return {
        "CreateSecurityConfiguration": {
            "Name": plan.security_configuration_name,
            "SecurityConfiguration": json.dumps(plan.security_configuration, sort_keys=True),
        },
        "RunJobFlow": plan.run_job_flow,
        "AddJobFlowSteps": plan.step_requests(),
    }


def render(plan: DeployPlan, result: DeployResult | None) -> str:
    lines = [f"artifacts: {plan.artifacts_uri} ({'; '.join(plan.notes)})"]
    if result is None:
        lines.append("dry run: nothing uploaded or created. Would upload:")
        lines += [f"  {u.local} -> {u.key}" for u in plan.uploads]
        lines.append("and send these requests (passwords redacted):")
        lines.append(json.dumps(dry_run_requests(plan), indent=1))
        return "\n".join(lines)
    lines.append(f"uploaded {len(result.uploaded)} files")
    if result.created_cluster:
        lines.append(
            f"security configuration {plan.security_configuration_name}: "
            f"{result.security_configuration}"
        )
        lines.append(
            f"created {plan.kind} cluster {result.cluster_id} "
            f"({plan.run_job_flow['ReleaseLabel']}, "
            f"{len(plan.run_job_flow['Configurations'])} configurations, "
            f"{len(plan.run_job_flow['BootstrapActions'])} bootstrap actions)"
        )
    else:
        lines.append(f"added {len(result.step_ids)} steps to cluster {result.cluster_id}")
    for name, step_id in zip(result.step_names, result.step_ids, strict=False):
        lines.append(f"  step {step_id}: {name}")
    lines += [f"  not added: {why}" for why in result.skipped]
    return "\n".join(lines)


def project_root() -> Path:
    return Path(os.environ.get("SENSORPIPE_ROOT", Path(__file__).resolve().parents[2]))
