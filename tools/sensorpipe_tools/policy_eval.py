"""AWS's policy evaluation logic for requests inside one account, offline: identity policies,
resource policies (S3 bucket policies, KMS key policies), explicit denies, and the condition
operators the estate's policies use, evaluated against the request's context keys.

Sources (IAM User Guide): "Policy evaluation logic" (an explicit deny in any policy wins; within
an account an allow in the identity policy or in the resource policy suffices, except for KMS,
whose key policy must allow the request, itself or by delegating to IAM through the account
principal: AWS KMS Developer Guide, "Key policies in AWS KMS"); "IAM JSON policy elements:
Condition operators" (a condition on a key the request does not carry is false, except with
...IfExists, the negated operators and ForAllValues, which are true; Null tests presence);
"Single-valued vs. multivalued context keys" (ForAnyValue / ForAllValues). No network, no
service-control or session policies, no permissions boundaries: the estate uses none.

    decision = evaluate(request, identity_statements, resource_statements, account="1234...")
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ContextValue = str | bool | list[str]
_NEGATED = ("StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals",
            "ArnNotLike", "NumericNotEquals")  # fmt: skip


class PolicyError(ValueError):
    """A policy uses an operator or element this evaluator does not implement."""


@dataclass(frozen=True)
class Request:
    principal: str  # the calling role's ARN
    action: str  # service:Action
    resource: str  # the resource's ARN ("*" for actions without a resource type)
    context: Mapping[str, ContextValue] = field(default_factory=dict)


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's wildcards: * any run of characters, ? one character; nothing else is special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL
    return re.fullmatch(regex, value, flags) is not None


def action_matches(pattern: str, action: str) -> bool:
    """Actions compare without regard to case (service prefixes and names)."""
    return pattern == "*" or _glob(pattern, action, ignore_case=True)


def _arn_like(pattern: str, value: str) -> bool:
    """ArnLike: each of the six colon-separated parts matched on its own."""
    p, v = pattern.split(":", 5), value.split(":", 5)
    return len(p) == len(v) == 6 and all(_glob(a, b) for a, b in zip(p, v, strict=True))


def _compare(base: str, policy_value: Any, value: Any) -> bool:
    if base in ("StringEquals", "StringNotEquals"):
        return str(value) == str(policy_value)
    if base in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        return str(value).lower() == str(policy_value).lower()
    if base in ("StringLike", "StringNotLike"):
        return _glob(str(policy_value), str(value))
    if base in ("ArnEquals", "ArnNotEquals"):
        return str(value) == str(policy_value)
    if base in ("ArnLike", "ArnNotLike"):
        return _arn_like(str(policy_value), str(value))
    if base == "Bool":
        return str(value).lower() == str(policy_value).lower()
    if base.startswith("Numeric"):
        a, b = float(value), float(policy_value)
        return {"NumericEquals": a == b, "NumericNotEquals": a == b, "NumericLessThan": a < b,
                "NumericLessThanEquals": a <= b, "NumericGreaterThan": a > b,
                "NumericGreaterThanEquals": a >= b}[base]  # fmt: skip
    raise PolicyError(f"condition operator {base} is not implemented")


_VARIABLE = re.compile(r"\$\{([A-Za-z0-9:/_-]+)\}")


def _substituted(value: Any, context: Mapping) -> Any:
    """`value` with its policy variables replaced from the context; None if one is missing."""
    if not isinstance(value, str) or "${" not in value:
        return value
    missing = [m for m in _VARIABLE.findall(value) if m not in context]
    if missing:
        return None
    return _VARIABLE.sub(lambda m: str(context[m.group(1)]), value)


def condition_holds(operator: str, key: str, policy_values: Any, context: Mapping) -> bool:
    """One operator on one condition key, as IAM evaluates it."""
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    wanted = [str(v).lower() if isinstance(v, bool) else v for v in _as_list(policy_values)]
    # Policy variables (IAM User Guide, "IAM policy elements: Variables and tags"): a value
    # `${aws:userid}` stands for the request's own aws:userid; one the request lacks matches
    # nothing.
    wanted = [_substituted(w, context) for w in wanted]
    wanted = [w for w in wanted if w is not None]
    present = key in context
    if base == "Null":
        return (not present) == (str(wanted[0]).lower() == "true")
    if not present:
        return if_exists or base in _NEGATED or qualifier == "ForAllValues"
    values = _as_list(context[key])
    negated = base in _NEGATED
    if qualifier == "ForAnyValue":
        hit = any(_compare(base, w, v) for v in values for w in wanted)
        return not hit if negated else hit
    if qualifier == "ForAllValues":
        return all(
            (not any(_compare(base, w, v) for w in wanted))
            if negated
            else any(_compare(base, w, v) for w in wanted)
            for v in values
        )
    if qualifier:
        raise PolicyError(f"condition qualifier {qualifier} is not implemented")
    if len(values) != 1:
        raise PolicyError(f"{key} is multivalued: use ForAnyValue or ForAllValues")
    hit = any(_compare(base, w, values[0]) for w in wanted)
    return not hit if negated else hit


def conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Mapping) -> bool:
    return all(
        condition_holds(operator, key, values, context)
        for operator, keys in conditions.items()
        for key, values in keys.items()
    )


def principal_matches(principal: Any, arn: str, account: str) -> bool:
    """A resource policy's Principal against the caller: "*", the role's ARN, or the account
    (the account principal matches every principal of the account)."""
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        raise PolicyError(f"principal {principal!r} is not implemented")
    for kind, values in principal.items():
        if kind != "AWS":
            continue  # service principals never match a role's request
        for value in _as_list(values):
            if value in ("*", arn, account, f"arn:aws:iam::{account}:root"):
                return True
    return False


def statement_matches(statement: Mapping[str, Any], request: Request, *, resource_policy: bool,
                      account: str) -> bool:  # fmt: skip
    """Whether the statement covers the request (its effect aside)."""
    if resource_policy:
        if "NotPrincipal" in statement:
            raise PolicyError("NotPrincipal is not implemented")
        if not principal_matches(statement.get("Principal"), request.principal, account):
            return False
    if "Action" in statement:
        if not any(action_matches(a, request.action) for a in _as_list(statement["Action"])):
            return False
    elif any(action_matches(a, request.action) for a in _as_list(statement["NotAction"])):
        return False
    if "NotResource" in statement:
        if any(_glob(r, request.resource) for r in _as_list(statement["NotResource"])):
            return False
    else:
        # In a key policy, "*" (or no Resource) is the key itself.
        resources = _as_list(statement.get("Resource", "*"))
        if not any(_glob(r, request.resource) for r in resources):
            return False
    return conditions_hold(statement.get("Condition", {}), request.context)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # which statement allowed or denied, or why nothing did


def _sid(statement: Mapping[str, Any], where: str) -> str:
    return f"{where} statement {statement.get('Sid') or '(no Sid)'}"


def evaluate(
    request: Request,
    identity: Iterable[Mapping[str, Any]],
    resource: Iterable[Mapping[str, Any]] | None = None,
    *,
    account: str,
    key_policy: bool = False,
) -> Decision:
    """The decision for a request within `account`. `resource` is the resource's policy (None
    when the resource type has none). With `key_policy`, the resource policy is a KMS key
    policy: it must allow the request, directly or by allowing the account (then the identity
    policy must allow it too)."""
    identity, resource = list(identity), list(resource or [])
    if key_policy and not resource:
        return Decision(False, "a KMS key without a key policy allows nothing")
    matching_identity = [s for s in identity if statement_matches(
        s, request, resource_policy=False, account=account)]  # fmt: skip
    matching_resource = [s for s in resource if statement_matches(
        s, request, resource_policy=True, account=account)]  # fmt: skip
    for s, where in [(s, "identity") for s in matching_identity] + [
        (s, "resource") for s in matching_resource
    ]:
        if s.get("Effect") == "Deny":
            return Decision(False, f"explicit deny: {_sid(s, where)}")
    identity_allows = [s for s in matching_identity if s.get("Effect") == "Allow"]
    resource_allows = [s for s in matching_resource if s.get("Effect") == "Allow"]
    if key_policy:
        direct = [s for s in resource_allows
                  if not principal_matches(s.get("Principal"), "-", account)]  # fmt: skip
        if direct:
            return Decision(True, f"key policy names the principal: {_sid(direct[0], 'key')}")
        if resource_allows and identity_allows:
            return Decision(True, f"key policy delegates to IAM and "
                                  f"{_sid(identity_allows[0], 'identity')} allows")  # fmt: skip
        return Decision(False, "the key policy allows neither the principal nor IAM for it"
                        if not resource_allows else "no identity statement allows it")
    if identity_allows:
        return Decision(True, f"{_sid(identity_allows[0], 'identity')} allows")
    direct = [s for s in resource_allows
              if not principal_matches(s.get("Principal"), "-", account)]  # fmt: skip
    if direct:
        return Decision(True, f"{_sid(direct[0], 'resource')} names the principal")
    return Decision(False, "implicit deny: no statement allows it")


def wildcard_matches(pattern: str, value: str) -> bool:
    """IAM's wildcard match of a Resource (or condition) pattern against a value."""
    return _glob(pattern, value)
