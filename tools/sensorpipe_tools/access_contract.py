"""The access contract: every AWS request each job makes on EMR, derived from the steps the
deploy submits and the job configurations they run, and checked against the estate's
synthesised templates with AWS's policy evaluation (policy_eval.py).

    estate = load_estate(cdk_out, account, region)      # infra/ synthesised
    for job in jobs(deploy_settings, root, account):    # one per step of the three clusters
        for access in job.accesses: estate.decide(job.role_arn, access)

A job's accesses come from its configuration (conf/emr.yaml, conf/health-emr.yaml,
conf/hospital-stream-emr.yaml) loaded with the environment the deploy gives its step (the
estate's outputs through conf/deploy.yaml's step_environment, and the region), through the
settings fields the jobs themselves build their paths and clients from. Encryption follows from
the estate, not the job: an object read from an SSE-KMS bucket is also a kms:Decrypt on the
bucket's default key via S3, a write a kms:GenerateDataKey (and Decrypt, for multipart
uploads); a GetRecords on an encrypted stream a kms:Decrypt via Kinesis; a secret read a
kms:Decrypt via Secrets Manager on the secret's key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sensorpipe.config import DeploySettings, HealthSettings, Settings, load_settings

from sensorpipe_tools.deploy import STEPS_FILES, placeholder_values, plan_steps, step_family
from sensorpipe_tools.policy_eval import Decision, Request, evaluate

EXAMPLE_OBJECT = "part-00000.parquet"  # an object key under a prefix the job uses
EXAMPLE_TRAIN = "train-01"


@dataclass(frozen=True)
class Access:
    action: str
    resource: str
    context: tuple[tuple[str, Any], ...] = ()
    why: str = ""

    def request(self, principal: str, base: Mapping[str, Any]) -> Request:
        return Request(principal, self.action, self.resource, {**base, **dict(self.context)})


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key.strip("/")


def s3(uri: str | None, *, read: bool = False, write: bool = False, why: str) -> list[Access]:
    """What reading and writing under an S3 prefix asks of S3: listing it (ListBucket with the
    prefix), getting objects; putting and deleting them (Spark's commit protocols and the
    file sink's log delete what they replace), aborting a failed multipart upload."""
    if not uri or not uri.startswith("s3://"):
        return []
    bucket, prefix = _split_s3(uri)
    arn, obj = f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{prefix}/{EXAMPLE_OBJECT}"
    out = [Access("s3:ListBucket", arn, (("s3:prefix", f"{prefix}/"),), why)]
    if read:
        out.append(Access("s3:GetObject", obj, (), why))
    if write:
        out += [Access(a, obj, (), why) for a in
                ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")]  # fmt: skip
    return out


def glue_tables(region: str, account: str, database: str, tables: list[str],
                why: str) -> list[Access]:  # fmt: skip
    """What registering a table through Spark's Hive client on the Glue Data Catalog asks:
    CREATE DATABASE IF NOT EXISTS, CREATE TABLE IF NOT EXISTS (DESCRIBE first), ALTER TABLE ADD
    IF NOT EXISTS PARTITION; each Glue action is authorised on the catalog, the database and
    the table ("Specifying AWS Glue resource ARNs")."""
    base = f"arn:aws:glue:{region}:{account}"
    catalog, db = f"{base}:catalog", f"{base}:database/{database}"
    out = [Access(a, r, (), why) for a in ("glue:GetDatabase", "glue:CreateDatabase")
           for r in (catalog, db)]  # fmt: skip
    for table in tables:
        arn = f"{base}:table/{database}/{table}"
        for action in ("glue:GetTable", "glue:CreateTable", "glue:GetPartition",
                       "glue:GetPartitions", "glue:BatchCreatePartition"):  # fmt: skip
            out += [Access(action, r, (), why) for r in (catalog, db, arn)]
    return out


def secret(region: str, account: str, name: str | None, why: str) -> list[Access]:
    """GetSecretValue by name: the secret's ARN ends in a six-character suffix."""
    if not name:
        return []
    arn = name if name.startswith("arn:") else (
        f"arn:aws:secretsmanager:{region}:{account}:secret:{name}-AbCdEf"
    )
    return [Access("secretsmanager:GetSecretValue", arn, (), why)]


@dataclass
class Job:
    name: str  # the step's name
    family: str  # streaming, batch, hospital
    role_arn: str
    accesses: list[Access] = field(default_factory=list)


def _stream_job(s: Settings, account: str) -> list[Access]:
    region, lake = s.source.region, s.lake
    out = s3(lake.events_path, read=True, write=True, why="events (file sink and its log)")
    out += s3(lake.quarantine_path, read=True, write=True, why="quarantine")
    out += s3(lake.checkpoint_root, read=True, write=True, why="checkpoints (read back)")
    if s.alerts.kind != "none":
        out += s3(lake.anomalies_path, write=True, why="anomalies table")
    if s.anomaly.joint_sensors:
        out += s3(lake.joint_path, read=True, write=True, why="joint table (file sink and its log)")
    stream = f"arn:aws:kinesis:{region}:{account}:stream/{s.source.stream_name}"
    out += [Access(a, stream, (), "the Kinesis source")
            for a in ("kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords")]
    if s.alerts.kind == "iot":
        thing = f"arn:aws:iot:{region}:{account}:thing/{EXAMPLE_TRAIN}"
        out += [Access(a, thing, (), "device shadows")
                for a in ("iot:GetThingShadow", "iot:UpdateThingShadow")]
        if not s.alerts.endpoint_url:
            out.append(Access("iot:DescribeEndpoint", "*", (), "the shadows' data endpoint"))
    if s.warehouse.kind == "redshift":
        out += _redshift(s, account)
    if s.metrics.kind == "cloudwatch":
        out.append(Access("cloudwatch:PutMetricData", "*",
                          (("cloudwatch:namespace", s.metrics.namespace),), "commit lag"))
    if s.catalog.kind == "hive":
        out += glue_tables(region, account, s.lake_database, ["events", "quarantine"],
                           "the lake tables")  # fmt: skip
    return out + _lineage(s.lineage.path)


def _redshift(s: Settings, account: str) -> list[Access]:
    w, region = s.warehouse, s.warehouse.region
    out = s3(w.staging_uri, write=True, why="COPY staging")
    out.append(Access("redshift-data:BatchExecuteStatement",
                      f"arn:aws:redshift-serverless:{region}:{account}:workgroup/wg-id", (),
                      "warehouse MERGE"))  # fmt: skip
    out.append(Access("redshift-data:DescribeStatement", "*", (), "warehouse statement state"))
    out += secret(region, account, w.secret_arn, "the Data API's database credentials")
    return out


def _lineage(path: str, why: str = "lineage record") -> list[Access]:
    return s3(path, write=True, why=why)


def _rollup(s: Settings, account: str) -> list[Access]:
    out = s3(s.lake.events_path, read=True, why="the day's events")
    out += s3(s.lake.compacted_path, read=True, why="compacted days")
    out += _redshift(s, account) + _lineage(s.lineage.path)
    return out


def _manifest(s: Settings, manifest_uri: str) -> list[Access]:
    out = s3(s.lake.events_path, read=True, why="the events sink log")
    return out + s3(manifest_uri.rsplit("/", 1)[0], write=True, why="S3DistCp's manifest")


def _distcp(source: str, manifest_uri: str) -> list[Access]:
    return s3(source, read=True, why="the day's committed files") + s3(
        manifest_uri.rsplit("/", 1)[0], read=True, why="the manifest"
    )


def _compaction(s: Settings, account: str) -> list[Access]:
    out = s3(s.lake.events_path, read=True, why="the sink log the copy is checked against")
    out += s3(s.lake.compacted_path, read=True, write=True, why="compacted table and markers")
    out += _lineage(s.lineage.path)
    if s.catalog.kind == "hive":
        out += glue_tables(s.source.region, account, s.lake_database, ["compacted_events"],
                           "compacted table")  # fmt: skip
    return out


def _ingest(h: HealthSettings, region: str, account: str) -> list[Access]:
    from sensorpipe.health.tables import SOURCE_TABLES

    out = secret(region, account, h.source.password_secret_id, "the hospital database")
    out += s3(h.protected.root, read=True, write=True, why="imported tables and their state")
    out += _lineage(h.lineage.path)
    if h.catalog.kind == "hive":
        out += glue_tables(region, account, h.catalog.protected_database,
                           [t.output_name for t in SOURCE_TABLES], "imported tables")  # fmt: skip
    return out


def _snapshot(h: HealthSettings, region: str, account: str) -> list[Access]:
    out = s3(h.protected.root, read=True, write=True, why="clinical tables, protected snapshot")
    out += s3(h.device_anomalies_path, read=True, why="clinical alerts")
    out += s3(h.general.root, read=True, write=True, why="the general zone's crossing")
    out += secret(region, account, h.general.token_key_secret_id, "the PHI token key")
    out += _lineage(h.lineage.path)
    if h.catalog.kind == "hive":
        names = ["patient_profile", "billing_discrepancies"]
        out += glue_tables(region, account, h.catalog.protected_database, names, "snapshot")
        out += glue_tables(region, account, h.catalog.database, names, "general snapshot")
    return out


def _arg(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def job_accesses(step: dict[str, Any], step_env: Mapping[str, str], root: Path,
                 account: str) -> list[Access]:  # fmt: skip
    """The accesses of one step (the CLI shape, filled), from the configuration it runs."""
    args, region = step["Args"], step_env["AWS_REGION"]
    out: list[Access] = []
    if step["Type"].upper() == "SPARK":
        artifacts = _arg(args, "--py-files").rsplit("/", 1)[0]
        out += s3(artifacts, read=True, why="the step's artifacts (zip, archive, job, conf)")
        config = Path(_arg(args, "--config")).name
        job = next(Path(a).name for a in args if a.endswith(".py"))
        if config == "health-emr.yaml":
            h = load_settings(root / "conf" / config, environ=step_env, kind=HealthSettings)
            return out + (_ingest(h, region, account) if job == "ingest_jdbc.py"
                          else _snapshot(h, region, account))  # fmt: skip
        s = load_settings(root / "conf" / config, environ=step_env)
        if job == "stream_sensor_anomalies.py":
            return out + _stream_job(s, account)
        if job == "batch_daily_rollup.py":
            return out + _rollup(s, account)
        if "--write-manifest" in args:
            return out + _manifest(s, _arg(args, "--write-manifest"))
        return out + _compaction(s, account)
    if "s3-dist-cp" in args:
        return _distcp(_arg(args, "--src"), _arg(args, "--srcPrefixesFile"))
    # script-runner: the node script is read from the artifacts with the step's role.
    return s3(args[0].rsplit("/", 2)[0], read=True, why="the node script")


def jobs(deploy: DeploySettings, root: Path, account: str) -> list[Job]:
    """Every step of the three clusters, with the role the deploy submits it with and the
    accesses it makes."""
    role = {"streaming": deploy.runtime_roles.streaming, "batch": deploy.runtime_roles.batch,
            "hospital": deploy.runtime_roles.hospital}  # fmt: skip
    step_env = {**deploy.step_environment, "AWS_REGION": deploy.region}
    values = placeholder_values(deploy, "v1", date(2026, 11, 28))
    out = []
    for kind in STEPS_FILES:
        steps = plan_steps(deploy, root, values, kind)  # type: ignore[arg-type]
        for i, step in enumerate(steps):
            family = step_family(steps, i)
            accesses = job_accesses(step, step_env, root, account)
            out.append(Job(f"{kind}: {step['Name']}", family, role[family], accesses))
    return out


# --- the estate, read from its templates --------------------------------------------------------


class Estate:
    """The synthesised templates as IAM sees them: roles and their policies, bucket policies
    and default keys, key policies and aliases, stream keys, secrets' keys."""

    def __init__(self, templates: Mapping[str, dict], account: str, region: str) -> None:
        self.templates, self.account, self.region = templates, account, region
        self.resources = {(stack, logical): r for stack, t in templates.items()
                          for logical, r in t.get("Resources", {}).items()}  # fmt: skip
        self.exports = {
            name: (stack, out["Value"])
            for stack, t in templates.items()
            for out in t.get("Outputs", {}).values()
            if isinstance(name := (out.get("Export") or {}).get("Name"), str)
        }

    # CloudFormation values, resolved as far as IAM needs them.
    def resolve(self, value: Any, stack: str) -> Any:
        if isinstance(value, list):
            return [self.resolve(v, stack) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: self.resolve(v, stack) for k, v in value.items()}
        (fn, arg), = value.items()
        if fn == "Ref":
            return {"AWS::Partition": "aws", "AWS::Region": self.region,
                    "AWS::AccountId": self.account, "AWS::URLSuffix": "amazonaws.com"}.get(
                arg) or self._ref(stack, arg)  # fmt: skip
        if fn == "Fn::GetAtt":
            logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return self._get_att(stack, logical, attribute)
        if fn == "Fn::Join":
            sep, parts = arg
            return sep.join(str(self.resolve(p, stack)) for p in parts)
        if fn == "Fn::ImportValue":
            name = self.resolve(arg, stack)
            owner, exported = self.exports[name]
            return self.resolve(exported, owner)
        return {fn: self.resolve(arg, stack)}

    def _resource(self, stack: str, logical: str) -> dict:
        return self.resources[(stack, logical)]

    def _ref(self, stack: str, logical: str) -> str:
        r = self._resource(stack, logical)
        p = r.get("Properties", {})
        kind = r["Type"]
        if kind == "AWS::S3::Bucket":
            return p["BucketName"]
        if kind == "AWS::IAM::Role":
            return p.get("RoleName", logical)
        if kind == "AWS::KMS::Key":
            return f"key-{logical}"
        if kind == "AWS::Kinesis::Stream":
            return p["Name"]
        if kind == "AWS::SecretsManager::Secret":
            return f"arn:aws:secretsmanager:{self.region}:{self.account}:secret:{p['Name']}-AbCdEf"
        ids = {"AWS::EC2::Subnet": "subnet", "AWS::EC2::SecurityGroup": "sg",
               "AWS::EC2::VPC": "vpc"}  # fmt: skip
        if kind in ids:  # ids EC2 assigns: stand-ins of the right shape
            return f"{ids[kind]}-{hashlib.sha256(logical.encode()).hexdigest()[:12]}"
        return f"{kind}:{logical}"

    def _get_att(self, stack: str, logical: str, attribute: str) -> str:
        r = self._resource(stack, logical)
        kind, name = r["Type"], self._ref(stack, logical)
        if attribute == "Arn":
            return {
                "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
                "AWS::IAM::Role": f"arn:aws:iam::{self.account}:role/{name}",
                "AWS::KMS::Key": f"arn:aws:kms:{self.region}:{self.account}:key/{name}",
                "AWS::Kinesis::Stream":
                    f"arn:aws:kinesis:{self.region}:{self.account}:stream/{name}",
            }.get(kind, f"{kind}:{logical}.Arn")
        if attribute == "GroupId":
            return name
        return f"{kind}:{logical}.{attribute}"

    def _of_type(self, kind: str) -> Iterator[tuple[str, str, dict]]:
        for (stack, logical), r in self.resources.items():
            if r["Type"] == kind:
                yield stack, logical, r.get("Properties", {})

    def role_statements(self, role_arn: str) -> list[dict]:
        """The identity policies of a role: its inline policies and the AWS::IAM::Policy
        resources attached to it (AWS managed policies are not read: no job role has one)."""
        out: list[dict] = []
        for stack, logical, p in self._of_type("AWS::IAM::Role"):
            if self._get_att(stack, logical, "Arn") != role_arn:
                continue
            if p.get("ManagedPolicyArns"):
                raise ValueError(f"{role_arn}: managed policies are not evaluated here")
            for policy in p.get("Policies", []):
                out += self.resolve(policy["PolicyDocument"], stack)["Statement"]
            for pstack, _, pol in self._of_type("AWS::IAM::Policy"):
                attached = {self.resolve(r, pstack) for r in pol.get("Roles", [])}
                if p.get("RoleName", logical) in attached:
                    out += self.resolve(pol["PolicyDocument"], pstack)["Statement"]
        return out

    def bucket(self, name: str) -> tuple[list[dict], str | None]:
        """A bucket's policy statements and its default KMS key's ARN (None: not SSE-KMS)."""
        for stack, _, p in self._of_type("AWS::S3::Bucket"):
            if p.get("BucketName") != name:
                continue
            statements: list[dict] = []
            for pstack, _, pol in self._of_type("AWS::S3::BucketPolicy"):
                if self.resolve(pol["Bucket"], pstack) == name:
                    statements += self.resolve(pol["PolicyDocument"], pstack)["Statement"]
            rules = (p.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration", [])
            key = None
            for rule in rules:
                default = rule.get("ServerSideEncryptionByDefault", {})
                if default.get("SSEAlgorithm") == "aws:kms":
                    key = self.resolve(default["KMSMasterKeyID"], stack)
            return statements, key
        raise KeyError(f"no bucket {name} in the estate")

    def key(self, arn: str) -> tuple[list[dict], list[str]]:
        """A key's policy statements and its aliases."""
        for stack, logical, p in self._of_type("AWS::KMS::Key"):
            if self._get_att(stack, logical, "Arn") == arn:
                aliases = [a["AliasName"] for s, _, a in self._of_type("AWS::KMS::Alias")
                           if self.resolve(a["TargetKeyId"], s) == arn]  # fmt: skip
                return self.resolve(p["KeyPolicy"], stack)["Statement"], aliases
        raise KeyError(f"no key {arn} in the estate")

    def stream_key(self, stream_arn: str) -> str | None:
        for stack, logical, p in self._of_type("AWS::Kinesis::Stream"):
            if self._get_att(stack, logical, "Arn") == stream_arn:
                enc = p.get("StreamEncryption") or {}
                return self.resolve(enc.get("KeyId"), stack) if enc else None
        raise KeyError(f"no stream {stream_arn} in the estate")

    def secret_key(self, secret_arn: str) -> str | None:
        for stack, logical, p in self._of_type("AWS::SecretsManager::Secret"):
            if self._ref(stack, logical) == secret_arn:
                return self.resolve(p["KmsKeyId"], stack) if p.get("KmsKeyId") else None
        raise KeyError(f"no secret {secret_arn} in the estate (created by no stack)")

    def outputs(self) -> dict[str, str]:
        return {key: str(self.resolve(out["Value"], stack))
                for stack, t in self.templates.items()
                for key, out in t.get("Outputs", {}).items()}  # fmt: skip

    # Decisions.
    def context(self, principal: str, access: Access) -> dict[str, Any]:
        """The condition keys of the request: TLS, the caller, and a key's aliases."""
        base = {"aws:SecureTransport": True, "s3:TlsVersion": "1.3",
                "aws:PrincipalAccount": self.account, "aws:PrincipalArn": principal}
        if access.action.startswith("kms:"):
            base["kms:ResourceAliases"] = self.key(access.resource)[1]
        return base

    def implied(self, access: Access) -> list[Access]:
        """The KMS requests a service makes with the caller's permissions on its behalf."""
        service = access.action.split(":")[0]
        if service == "s3" and access.action != "s3:ListBucket":
            bucket = access.resource.removeprefix("arn:aws:s3:::").split("/")[0]
            _, key = self.bucket(bucket)
            if key is None or access.action in ("s3:DeleteObject", "s3:AbortMultipartUpload"):
                return []
            actions = ["kms:Decrypt"] if access.action == "s3:GetObject" else [
                "kms:GenerateDataKey", "kms:Decrypt"]  # fmt: skip
            via = (("kms:ViaService", f"s3.{self.region}.amazonaws.com"),
                   ("kms:EncryptionContext:aws:s3:arn", f"arn:aws:s3:::{bucket}"))
            return [Access(a, key, via, f"SSE-KMS of {bucket}") for a in actions]
        if access.action == "kinesis:GetRecords":
            key = self.stream_key(access.resource)
            via = (("kms:ViaService", f"kinesis.{self.region}.amazonaws.com"),)
            return [Access("kms:Decrypt", key, via, "the stream's encryption")] if key else []
        if access.action == "secretsmanager:GetSecretValue":
            key = self.secret_key(access.resource)
            via = (("kms:ViaService", f"secretsmanager.{self.region}.amazonaws.com"),)
            return [Access("kms:Decrypt", key, via, "the secret's encryption")] if key else []
        return []

    def decide(self, principal: str, access: Access) -> Decision:
        request = access.request(principal, self.context(principal, access))
        identity = self.role_statements(principal)
        service = access.action.split(":")[0]
        if service == "s3":
            bucket = access.resource.removeprefix("arn:aws:s3:::").split("/")[0]
            return evaluate(request, identity, self.bucket(bucket)[0], account=self.account)
        if service == "kms":
            return evaluate(request, identity, self.key(access.resource)[0],
                            account=self.account, key_policy=True)  # fmt: skip
        if service == "secretsmanager":
            return evaluate(request, identity, self.secret_policy(access.resource),
                            account=self.account)  # fmt: skip
        return evaluate(request, identity, account=self.account)

    def secret_policy(self, secret_arn: str) -> list[dict]:
        """A secret's resource policy statements (AWS::SecretsManager::ResourcePolicy)."""
        out: list[dict] = []
        for stack, _, p in self._of_type("AWS::SecretsManager::ResourcePolicy"):
            if self.resolve(p["SecretId"], stack) == secret_arn:
                out += self.resolve(p["ResourcePolicy"], stack)["Statement"]
        return out

    def all_accesses(self, access: Access) -> list[Access]:
        return [access, *self.implied(access)]


def load_estate(cdk_out: Path, account: str, region: str) -> Estate:
    templates = {p.name.removesuffix(".template.json"): json.loads(p.read_text())
                 for p in sorted(Path(cdk_out).glob("*.template.json"))}  # fmt: skip
    return Estate(templates, account, region)
