"""The access contract (tools/sensorpipe_tools/access_contract.py): every AWS request each job
makes on EMR, derived from the steps the deploy submits and the configurations they run,
evaluated against the synthesised estate (roles, bucket and key policies) with AWS's policy
evaluation logic (tools/sensorpipe_tools/policy_eval.py, tests/test_policy_eval.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sensorpipe.config import DeploySettings, load_settings
from sensorpipe_tools.access_contract import Access, jobs, load_estate
from sensorpipe_tools.policy_eval import action_matches, statement_matches, wildcard_matches

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT, REGION = "123456789012", "eu-west-1"  # infra/estate.yaml's defaults


@pytest.fixture(scope="module")
def contract(estate_cdk_out):
    estate = load_estate(estate_cdk_out, ACCOUNT, REGION)
    env = {**estate.outputs(), "AWS_REGION": REGION}
    deploy = load_settings(ROOT / "conf/deploy.yaml", environ=env, kind=DeploySettings)
    return estate, deploy, jobs(deploy, ROOT, ACCOUNT)


def test_every_step_of_every_cluster_has_accesses_and_a_runtime_role(contract):
    _, deploy, found = contract
    families = {job.family for job in found}
    assert families == {"streaming", "batch", "hospital"}
    assert all(job.accesses for job in found), [j.name for j in found if not j.accesses]
    assert {job.role_arn for job in found} == {
        deploy.runtime_roles.streaming, deploy.runtime_roles.batch, deploy.runtime_roles.hospital
    }  # fmt: skip


def test_every_access_each_job_makes_is_allowed(contract):
    """Each access, and what the service asks on its behalf (KMS via S3, Kinesis, Secrets
    Manager), allowed by the job's runtime role, the bucket's policy and the key's policy."""
    estate, _, found = contract
    denied = []
    for job in found:
        for access in job.accesses:
            try:
                implied = estate.all_accesses(access)
            except KeyError as exc:  # a resource no stack creates
                denied.append(f"{job.name}: {access.action} {access.resource}: {exc}")
                continue
            for one in implied:
                decision = estate.decide(job.role_arn, one)
                if not decision.allowed:
                    denied.append(f"{job.name}: {one.action} {one.resource} ({one.why}): "
                                  f"{decision.reason}")  # fmt: skip
    assert sorted(set(denied)) == []


def _family_requests(estate, found, family):
    role = next(j.role_arn for j in found if j.family == family)
    accesses = set()
    for job in found:
        for access in job.accesses if job.family == family else []:
            try:
                accesses.update(estate.all_accesses(access))
            except KeyError:  # reported by the test above
                accesses.add(access)
    return role, accesses


@pytest.mark.parametrize("family", ["streaming", "batch", "hospital"])
def test_no_runtime_role_grants_what_no_job_of_its_family_asks(contract, family):
    """Each action and each resource of each statement of the role is used by some access of
    the family's jobs that the statement covers: a grant nobody needs is reported."""
    estate, _, found = contract
    role, accesses = _family_requests(estate, found, family)
    unused = []
    for statement in estate.role_statements(role):
        if statement.get("Effect") != "Allow":
            continue
        for action in statement["Action"] if isinstance(statement["Action"], list) else [
            statement["Action"]
        ]:
            resources = statement.get("Resource", "*")
            for resource in resources if isinstance(resources, list) else [resources]:
                one = {**statement, "Action": action, "Resource": resource}
                used = [a for a in accesses if action_matches(action, a.action)
                        and wildcard_matches(resource, a.resource)
                        and statement_matches(one, a.request(role, estate.context(role, a)),
                                              resource_policy=False, account=ACCOUNT)]  # fmt: skip
                if not used:
                    unused.append(f"{statement.get('Sid') or ''} {action} on {resource}")
    assert unused == []


def test_cross_zone_accesses_are_denied(contract):
    """The train role cannot read the protected zone nor use its key; the batch role cannot
    write a stream; the hospital role cannot write the train lake."""
    estate, deploy, found = contract
    outputs = estate.outputs()
    protected, lake = outputs["ProtectedBucketName"], outputs["LakeBucketName"]
    _, protected_key = estate.bucket(protected)
    stream = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{outputs['TelemetryStreamName']}"
    via_s3 = (("kms:ViaService", f"s3.{REGION}.amazonaws.com"),)
    token_key = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:sensorpipe/phi-token-key-AbCdEf"
    cases = [
        (deploy.runtime_roles.streaming,
         Access("s3:GetObject", f"arn:aws:s3:::{protected}/hospital/patients/x.parquet")),
        (deploy.runtime_roles.streaming, Access("kms:Decrypt", protected_key, via_s3)),
        (deploy.runtime_roles.batch,
         Access("s3:GetObject", f"arn:aws:s3:::{protected}/hospital/patients/x.parquet")),
        (deploy.runtime_roles.batch, Access("kinesis:PutRecord", stream)),
        (deploy.runtime_roles.batch, Access("kinesis:PutRecords", stream)),
        (deploy.runtime_roles.hospital,
         Access("s3:PutObject", f"arn:aws:s3:::{lake}/lake/raw/events/x.parquet")),
        (deploy.runtime_roles.hospital, Access("kinesis:GetRecords", stream)),
        # The PHI token key: the hospital's alone, even for a role an IAM policy would allow.
        (deploy.runtime_roles.streaming, Access("secretsmanager:GetSecretValue", token_key)),
        (deploy.runtime_roles.batch, Access("secretsmanager:GetSecretValue", token_key)),
    ]  # fmt: skip
    allowed = [(role, a.action, a.resource) for role, a in cases
               if estate.decide(role, a).allowed]  # fmt: skip
    assert allowed == []
    # Even a role whose IAM policy allowed every secret is refused by the secret's own policy.
    from sensorpipe_tools.policy_eval import Request, evaluate

    anyone = f"arn:aws:iam::{ACCOUNT}:role/someone-with-secretsmanager-star"
    everything = [{"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}]
    request = Request(anyone, "secretsmanager:GetSecretValue", token_key,
                      {"aws:PrincipalArn": anyone})  # fmt: skip
    assert estate.secret_policy(token_key)
    assert not evaluate(request, everything, estate.secret_policy(token_key),
                        account=ACCOUNT).allowed  # fmt: skip
    # And the same evaluation allows the zone's own role: the denials are not the evaluator's.
    assert estate.decide(deploy.runtime_roles.hospital, Access(
        "s3:GetObject", f"arn:aws:s3:::{protected}/hospital/patients/x.parquet")).allowed


def test_the_joint_table_when_turned_on_is_within_the_streaming_role(contract):
    """anomaly.joint_sensors is off in conf/emr.yaml; turned on (as an operator would, by the
    train stream step's environment), the job also reads and writes lake.joint_path, which
    its runtime role and the bucket allow."""
    from sensorpipe_tools.access_contract import job_accesses
    from sensorpipe_tools.deploy import placeholder_values, plan_steps

    estate, deploy, found = contract
    role = next(job.role_arn for job in found if job.family == "streaming")
    values = placeholder_values(deploy, "v1", date(2026, 11, 28))
    [step] = [s for s in plan_steps(deploy, ROOT, values, "stream")
              if "stream_sensor_anomalies.py" in " ".join(s["Args"])]  # fmt: skip
    env = {**deploy.step_environment, "AWS_REGION": deploy.region,
           "SENSORPIPE__ANOMALY__JOINT_SENSORS": "[wheel_speed, traction_motor_current]"}
    joint = [a for a in job_accesses(step, env, ROOT, ACCOUNT) if "joint table" in a.why]
    assert {a.action for a in joint} >= {"s3:PutObject", "s3:GetObject"}
    for access in joint:
        for one in estate.all_accesses(access):
            decision = estate.decide(role, one)
            assert decision.allowed, (one.action, one.resource, decision.reason)
