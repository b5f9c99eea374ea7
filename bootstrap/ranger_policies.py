#!/usr/bin/env python3
"""Create or update, idempotently, the project's Ranger policies from conf/ranger/*.json.

    python bootstrap/ranger_policies.py --url https://ranger-admin:6182 --user admin \
        --password-env RANGER_ADMIN_PASSWORD [--policies conf/ranger] [--dry-run]

Each file holds {"policies": [...]} in Ranger's policy JSON: access by role to the raw and
aggregate databases, row filters by facility on clinical tables, masks on PHI columns. Every
policy is built with the official client's model classes (apache-ranger) and checked before
anything is sent. For each, the admin server is asked for the policy of that name in that
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
# Hive's masking functions, as Ranger's hive service definition names them.
MASK_TYPES = {
    "MASK", "MASK_SHOW_LAST_4", "MASK_SHOW_FIRST_4", "MASK_HASH", "MASK_NULL", "MASK_NONE",
    "MASK_DATE_SHOW_YEAR", "CUSTOM",
}  # fmt: skip
HIVE_ACCESSES = {
    "select", "update", "create", "drop", "alter", "index", "lock", "all", "read", "write",
    "repladmin", "serviceadmin", "tempudfadmin", "refresh",
}  # fmt: skip
# The fields this project owns in a policy; Ranger adds id, guid, version, times and so on.
MANAGED = (
    "service", "name", "policyType", "description", "isEnabled", "isAuditEnabled",
    "resources", "policyItems", "denyPolicyItems", "allowExceptions", "denyExceptions",
    "dataMaskPolicyItems", "rowFilterPolicyItems",
)  # fmt: skip


class PolicyError(ValueError):
    """A policy document is not valid; the message names the file and the policy."""


def build_policy(doc: dict[str, Any], where: str) -> RangerPolicy:
    """A RangerPolicy from its JSON, checked: resources, items and their types."""
    policy = RangerPolicy(doc)
    policy.type_coerce_attrs()
    name = f"{where}: policy {policy.name!r}"
    if not policy.service or not policy.name:
        raise PolicyError(f"{where}: every policy needs service and name")
    if policy.policyType not in POLICY_TYPES:
        raise PolicyError(f"{name}: policyType must be one of {sorted(POLICY_TYPES)}")
    if not policy.resources or not all(
        isinstance(r, RangerPolicyResource) and r.values for r in policy.resources.values()
    ):
        raise PolicyError(f"{name}: resources must name values")
    items = getattr(policy, POLICY_TYPES[policy.policyType]) or []
    if not items:
        raise PolicyError(f"{name}: needs {POLICY_TYPES[policy.policyType]}")
    for item in items:
        if not (item.users or item.groups or item.roles):
            raise PolicyError(f"{name}: an item grants nobody (users, groups or roles)")
        for access in item.accesses or []:
            if not isinstance(access, RangerPolicyItemAccess) or access.type not in HIVE_ACCESSES:
                raise PolicyError(f"{name}: unknown access type {access.get('type')!r}")
        if policy.policyType == RangerPolicy.POLICY_TYPE_DATAMASK:
            mask = item.dataMaskInfo
            if mask is None or mask.dataMaskType not in MASK_TYPES:
                raise PolicyError(
                    f"{name}: dataMaskInfo.dataMaskType must be one of {sorted(MASK_TYPES)}"
                )
        if policy.policyType == RangerPolicy.POLICY_TYPE_ROWFILTER:
            if item.rowFilterInfo is None or not item.rowFilterInfo.filterExpr:
                raise PolicyError(f"{name}: rowFilterInfo.filterExpr is required")
    return policy


def load_policies(folder: Path) -> list[RangerPolicy]:
    policies, seen = [], set()
    for path in sorted(folder.glob("*.json")):
        try:
            docs = json.loads(path.read_text())["policies"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise PolicyError(f'{path}: expected {{"policies": [...]}}: {exc}') from None
        for doc in docs:
            policy = build_policy(doc, str(path))
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
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--ca-bundle", help="TLS CA bundle for the admin server")
    args = parser.parse_args(argv)
    try:
        policies = load_policies(Path(args.policies))
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
