#!/usr/bin/env python3
"""Create or update, idempotently, the project's Ranger policies from conf/ranger/*.json.

    python bootstrap/ranger_policies.py --url https://ranger-admin:6182 --user admin \
        --password-env RANGER_ADMIN_PASSWORD [--policies conf/ranger] [--dry-run]

Each file holds {"policies": [...]} in Ranger's policy JSON, for the services EMR's Ranger
plugins enforce: `amazon-emr-spark` (databases, tables, columns, table URLs) and
`amazon-emr-emrfs` (S3 paths). EMR's Ranger integration ends at release 7.3 ("Integrate Amazon
EMR with Apache Ranger": not supported from 7.4 on), so on emr-spark-8.0.0 these policies serve
the clusters and engines that still enforce them (docs/emr.md); the jobs there run with runtime
roles and Lake Formation governs the readers. Every policy is built with the official client's model
classes (apache-ranger) and checked against its service's definition (conf/ranger/servicedefs/,
AWS's published definitions) before anything is sent: its resources must be one of the
definition's resource hierarchies, its access types the definition's, and its policy type one
the definition supports (neither has masking or row filters: AWS documents that EMR's Spark
plugin enforces neither). Which service a policy is for comes from the plugins'
RangerPluginConfigurations (conf/ranger/plugins.json, or a security configuration holding a
RangerConfiguration). For each policy, the admin
server is asked for the policy of that name in that
service: missing -> created; different -> updated by id; the same -> left alone. A second run
therefore changes nothing. Needs `pip install apache-ranger`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apache_ranger.model.ranger_policy import (
    RangerPolicy,
    RangerPolicyItemAccess,
    RangerPolicyResource,
)

POLICY_TYPES = {
    RangerPolicy.POLICY_TYPE_ACCESS: "policyItems",
    RangerPolicy.POLICY_TYPE_DATAMASK: "dataMaskPolicyItems",
    RangerPolicy.POLICY_TYPE_ROWFILTER: "rowFilterPolicyItems",
}
# The service definition each EMR plugin (the security configuration's "App", as AWS's examples
# write it) enforces.
APP_SERVICE_TYPES = {"Spark": "amazon-emr-spark", "EMRFS-S3": "amazon-emr-emrfs"}
# The fields this project owns in a policy; Ranger adds id, guid, version, times and so on.
MANAGED = (
    "service", "name", "policyType", "description", "isEnabled", "isAuditEnabled",
    "resources", "policyItems", "denyPolicyItems", "allowExceptions", "denyExceptions",
    "dataMaskPolicyItems", "rowFilterPolicyItems",
)  # fmt: skip


class PolicyError(ValueError):
    """A policy document is not valid; the message names the file and the policy."""


@dataclass
class ServiceDef:
    """What a Ranger service definition allows a policy to name."""

    name: str
    hierarchies: list[frozenset[str]]  # each root-to-leaf chain of resources
    access_types: set[str]
    policy_types: set[int]

    @classmethod
    def load(cls, path: Path) -> ServiceDef:
        doc = json.loads(path.read_text())
        resources = {r["name"]: r for r in doc["resources"]}
        leaves = [n for n in resources if not any(r["parent"] == n for r in resources.values())]
        hierarchies = []
        for leaf in leaves:
            chain, name = [], leaf
            while name:
                chain.append(name)
                name = resources[name]["parent"]
            hierarchies.append(frozenset(chain))
        policy_types = {RangerPolicy.POLICY_TYPE_ACCESS}
        if doc.get("dataMaskDef", {}).get("resources"):
            policy_types.add(RangerPolicy.POLICY_TYPE_DATAMASK)
        if doc.get("rowFilterDef", {}).get("resources"):
            policy_types.add(RangerPolicy.POLICY_TYPE_ROWFILTER)
        access = {a["name"] for a in doc["accessTypes"]}
        return cls(doc["name"], hierarchies, access, policy_types)


def load_services(folder: Path, security_configuration: Path) -> dict[str, ServiceDef]:
    """Policy repository name -> its service definition, from the RangerPluginConfigurations
    (of conf/ranger/plugins.json or of a security configuration with a RangerConfiguration)
    and the definitions in <folder>/servicedefs/."""
    definitions = {
        d.name: d for d in map(ServiceDef.load, sorted((folder / "servicedefs").glob("*.json")))
    }
    config = json.loads(security_configuration.read_text())
    plugins = config.get("RangerPluginConfigurations") or config["AuthorizationConfiguration"][
        "RangerConfiguration"]["RangerPluginConfigurations"]  # fmt: skip
    services = {}
    for plugin in plugins:
        service_type = APP_SERVICE_TYPES.get(plugin["App"])
        if service_type not in definitions:
            raise PolicyError(
                f"{security_configuration}: no service definition for plugin {plugin['App']} "
                f"({service_type}) in {folder / 'servicedefs'}"
            )
        services[plugin["PolicyRepositoryName"]] = definitions[service_type]
    return services


def build_policy(doc: dict[str, Any], where: str, services: dict[str, ServiceDef]) -> RangerPolicy:
    """A RangerPolicy from its JSON, checked against its service's definition."""
    policy = RangerPolicy(doc)
    policy.type_coerce_attrs()
    name = f"{where}: policy {policy.name!r}"
    if not policy.service or not policy.name:
        raise PolicyError(f"{where}: every policy needs service and name")
    service = services.get(policy.service)
    if service is None:
        raise PolicyError(
            f"{name}: service {policy.service!r} is no plugin's policy repository "
            f"(the security configuration names {sorted(services)})"
        )
    if policy.policyType not in POLICY_TYPES:
        raise PolicyError(f"{name}: policyType must be one of {sorted(POLICY_TYPES)}")
    if policy.policyType not in service.policy_types:
        raise PolicyError(
            f"{name}: {service.name} supports policy types {sorted(service.policy_types)} only "
            f"(no data masking or row filtering), not {policy.policyType}"
        )
    if not policy.resources or not all(
        isinstance(r, RangerPolicyResource) and r.values for r in policy.resources.values()
    ):
        raise PolicyError(f"{name}: resources must name values")
    if frozenset(policy.resources) not in service.hierarchies:
        raise PolicyError(
            f"{name}: resources {sorted(policy.resources)} are not a resource hierarchy of "
            f"{service.name} ({sorted(sorted(h) for h in service.hierarchies)})"
        )
    items = getattr(policy, POLICY_TYPES[policy.policyType]) or []
    if not items:
        raise PolicyError(f"{name}: needs {POLICY_TYPES[policy.policyType]}")
    for item in items:
        if not (item.users or item.groups or item.roles):
            raise PolicyError(f"{name}: an item grants nobody (users, groups or roles)")
        for access in item.accesses or []:
            kind = access.type if isinstance(access, RangerPolicyItemAccess) else None
            if kind not in service.access_types:
                raise PolicyError(
                    f"{name}: access type {kind!r} is not one of {service.name}'s "
                    f"{sorted(service.access_types)}"
                )
    return policy


def load_policies(folder: Path, security_configuration: Path | None = None) -> list[RangerPolicy]:
    security_configuration = security_configuration or folder / "plugins.json"
    services = load_services(folder, security_configuration)
    policies, seen = [], set()
    for path in sorted(p for p in folder.glob("*.json") if p.name != "plugins.json"):
        try:
            docs = json.loads(path.read_text())["policies"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise PolicyError(f'{path}: expected {{"policies": [...]}}: {exc}') from None
        for doc in docs:
            policy = build_policy(doc, str(path), services)
            key = (policy.service, policy.name)
            if key in seen:
                raise PolicyError(f"{path}: policy {policy.name!r} is defined twice")
            seen.add(key)
            policies.append(policy)
    if not policies:
        raise PolicyError(f"{folder}: no policies")
    return policies


def _normalised(policy: dict[str, Any]) -> str:
    """The managed fields with Ranger's defaults filled in, as canonical JSON."""
    model = RangerPolicy(json.loads(json.dumps(policy)))
    model.type_coerce_attrs()
    defaults = {"isEnabled": True, "isAuditEnabled": True, "description": None}
    view = {}
    for key in MANAGED:
        value = model.get(key, defaults.get(key))
        if key.endswith(("Items", "Exceptions")):
            # Ranger returns empty grantee and condition lists where a document omits them.
            value = [
                {"users": [], "groups": [], "roles": [], "conditions": [], **i} for i in value or []
            ]
        view[key] = value
    return json.dumps(view, sort_keys=True)


@dataclass
class Outcome:
    service: str
    name: str
    action: str  # created | updated | unchanged (or "would ..." in a dry run)
    policy_id: int | None = None


def apply_policies(
    client: Any, policies: list[RangerPolicy], dry_run: bool = False
) -> list[Outcome]:
    outcomes = []
    for policy in policies:
        existing = client.get_policy(policy.service, policy.name)
        if existing is None:
            if dry_run:
                outcomes.append(Outcome(policy.service, policy.name, "would create"))
                continue
            created = client.create_policy(policy)
            outcomes.append(Outcome(policy.service, policy.name, "created", created.id))
        elif _normalised(existing) == _normalised(policy):
            outcomes.append(Outcome(policy.service, policy.name, "unchanged", existing.id))
        elif dry_run:
            outcomes.append(Outcome(policy.service, policy.name, "would update", existing.id))
        else:
            policy.id = existing.id
            client.update_policy_by_id(existing.id, policy)
            outcomes.append(Outcome(policy.service, policy.name, "updated", existing.id))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="Ranger admin, e.g. https://host:6182")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password-env", default="RANGER_ADMIN_PASSWORD",
                        help="environment variable holding the password")  # fmt: skip
    parser.add_argument(
        "--policies", default=str(Path(__file__).resolve().parent.parent / "conf/ranger")
    )
    parser.add_argument(
        "--security-configuration",
        help="the plugins' RangerPluginConfigurations (default: plugins.json in --policies)",
    )
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--ca-bundle", help="TLS CA bundle for the admin server")
    args = parser.parse_args(argv)
    try:
        security = Path(args.security_configuration) if args.security_configuration else None
        policies = load_policies(Path(args.policies), security)
    except PolicyError as exc:
        print(f"ranger_policies: {exc}", file=sys.stderr)
        return 2
    password = os.environ.get(args.password_env)
    if not password:
        print(f"ranger_policies: {args.password_env} is not set", file=sys.stderr)
        return 2
    from apache_ranger.client.ranger_client import RangerClient

    client = RangerClient(args.url, (args.user, password))
    if args.ca_bundle:
        client.session.verify = args.ca_bundle
    from apache_ranger.exceptions import RangerServiceException

    try:
        outcomes = apply_policies(client, policies, args.dry_run)
    except RangerServiceException as exc:
        print(f"ranger_policies: {exc.method} {exc.path}: HTTP {exc.statusCode} "
              f"{exc.msgDesc or ''}", file=sys.stderr)  # fmt: skip
        return 1
    for outcome in outcomes:
        policy_id = f" (id {outcome.policy_id})" if outcome.policy_id is not None else ""
        print(f"{outcome.action:>12}  {outcome.service} / {outcome.name}{policy_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
