"""The policy evaluator the access contract uses (tools/sensorpipe_tools/policy_eval.py), on
cases taken from AWS's documentation of policy evaluation: each names the page and what it
says, and each could fail."""

from __future__ import annotations

import pytest
from sensorpipe_tools.policy_eval import PolicyError, Request, condition_holds, evaluate

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/jobs"
BUCKET = "arn:aws:s3:::lake"


def allow(action, resource, **extra):
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def get(key: str, **context) -> Request:
    return Request(ROLE, "s3:GetObject", f"{BUCKET}/{key}", context)


def test_default_deny_when_nothing_allows():
    """"Policy evaluation logic": by default, all requests are implicitly denied."""
    assert not evaluate(get("a"), [], account=ACCOUNT).allowed


def test_an_allow_matches_by_wildcards_in_action_and_resource():
    identity = [allow("s3:Get*", f"{BUCKET}/lake/raw/*")]
    assert evaluate(get("lake/raw/x.parquet"), identity, account=ACCOUNT).allowed
    assert not evaluate(get("lake/anomalies/x"), identity, account=ACCOUNT).allowed
    # Actions compare case-insensitively ("IAM JSON policy elements: Action").
    assert evaluate(get("lake/raw/x"), [allow("S3:getobject", "*")], account=ACCOUNT).allowed


def test_an_explicit_deny_in_the_resource_policy_overrides_an_identity_allow():
    """"Policy evaluation logic": an explicit deny in any policy overrides any allow."""
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": f"{BUCKET}/*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}  # fmt: skip
    identity = [allow("s3:GetObject", "*")]
    assert not evaluate(get("a", **{"aws:SecureTransport": False}), identity, [deny],
                        account=ACCOUNT).allowed  # fmt: skip
    assert evaluate(get("a", **{"aws:SecureTransport": True}), identity, [deny],
                    account=ACCOUNT).allowed  # fmt: skip


def test_within_one_account_a_resource_policy_naming_the_role_suffices():
    """"Policy evaluation logic" (same account): an allow in the identity-based or in the
    resource-based policy is enough; the account principal only delegates."""
    naming = [{"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "s3:GetObject",
               "Resource": f"{BUCKET}/*"}]  # fmt: skip
    assert evaluate(get("a"), [], naming, account=ACCOUNT).allowed
    account_wide = [{**naming[0], "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}}]
    assert not evaluate(get("a"), [], account_wide, account=ACCOUNT).allowed


def test_a_kms_key_policy_must_allow_the_request_itself_or_delegate_to_iam():
    """AWS KMS Developer Guide, "Key policies in AWS KMS": no principal may use a key unless the
    key policy allows it; the default key policy's account statement lets IAM policies grant."""
    key = "arn:aws:kms:eu-west-1:123456789012:key/k1"
    decrypt = Request(ROLE, "kms:Decrypt", key, {})
    identity = [allow("kms:Decrypt", "arn:aws:kms:eu-west-1:123456789012:key/*")]
    delegating = [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                   "Action": "kms:*", "Resource": "*"}]  # fmt: skip
    admins_only = [{**delegating[0], "Action": ["kms:Describe*", "kms:Put*"]}]
    assert evaluate(decrypt, identity, delegating, account=ACCOUNT, key_policy=True).allowed
    assert not evaluate(decrypt, [], delegating, account=ACCOUNT, key_policy=True).allowed
    assert not evaluate(decrypt, identity, admins_only, account=ACCOUNT, key_policy=True).allowed
    naming = [{"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "kms:Decrypt",
               "Resource": "*"}]  # fmt: skip
    assert evaluate(decrypt, [], naming, account=ACCOUNT, key_policy=True).allowed


def test_a_condition_on_a_key_the_request_lacks():
    """"IAM JSON policy elements: Condition operators": a missing key makes the condition false,
    but true with ...IfExists and with the negated operators; Null tests presence."""
    assert not condition_holds("StringEquals", "s3:prefix", "a/", {})
    assert condition_holds("StringEqualsIfExists", "s3:prefix", "a/", {})
    assert condition_holds("StringNotEquals", "s3:x-amz-server-side-encryption", "aws:kms", {})
    assert condition_holds("Null", "s3:x-amz-server-side-encryption", "true", {})
    assert not condition_holds("Null", "s3:x-amz-server-side-encryption", "false", {})


def test_the_buckets_deny_other_encryption_spares_a_write_naming_none():
    """The estate's DenyOtherEncryption: Null false AND StringNotEquals aws:kms. A write that
    names no encryption gets the bucket's default and is not denied; one asking for AES256 is."""
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": "*",
            "Condition": {"Null": {"s3:x-amz-server-side-encryption": "false"},
                          "StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}}
    put = Request(ROLE, "s3:PutObject", f"{BUCKET}/a", {})
    identity = [allow("s3:PutObject", "*")]
    assert evaluate(put, identity, [deny], account=ACCOUNT).allowed
    aes = Request(ROLE, "s3:PutObject", f"{BUCKET}/a",
                  {"s3:x-amz-server-side-encryption": "AES256"})  # fmt: skip
    assert not evaluate(aes, identity, [deny], account=ACCOUNT).allowed


def test_multivalued_keys_need_for_any_value_or_for_all_values():
    """"Single-valued vs. multivalued context keys": kms:ResourceAliases is multivalued."""
    ctx = {"kms:ResourceAliases": ["alias/a", "alias/b"]}
    assert condition_holds("ForAnyValue:StringEquals", "kms:ResourceAliases", "alias/b", ctx)
    assert not condition_holds("ForAnyValue:StringEquals", "kms:ResourceAliases", "alias/c", ctx)
    assert not condition_holds("ForAllValues:StringEquals", "kms:ResourceAliases", "alias/a", ctx)
    assert condition_holds("ForAllValues:StringEquals", "kms:ResourceAliases", "alias/a", {})
    with pytest.raises(PolicyError, match="multivalued"):
        condition_holds("StringEquals", "kms:ResourceAliases", "alias/a", ctx)


def test_list_bucket_is_scoped_by_the_prefix_condition():
    """Amazon S3 User Guide, "Condition key examples": s3:prefix with StringLike limits which
    part of a bucket ListBucket may list."""
    statement = allow("s3:ListBucket", BUCKET, Condition={"StringLike": {"s3:prefix": ["lake/*"]}})
    listing = Request(ROLE, "s3:ListBucket", BUCKET, {"s3:prefix": "lake/raw/events/"})
    assert evaluate(listing, [statement], account=ACCOUNT).allowed
    other = Request(ROLE, "s3:ListBucket", BUCKET, {"s3:prefix": "hospital/"})
    assert not evaluate(other, [statement], account=ACCOUNT).allowed


def test_not_action_and_not_resource_exclude():
    everything_but_delete = {"Effect": "Allow", "NotAction": "s3:Delete*", "Resource": "*"}
    assert evaluate(get("a"), [everything_but_delete], account=ACCOUNT).allowed
    delete = Request(ROLE, "s3:DeleteObject", f"{BUCKET}/a", {})
    assert not evaluate(delete, [everything_but_delete], account=ACCOUNT).allowed
    outside = {"Effect": "Deny", "Action": "s3:*", "NotResource": f"{BUCKET}/lake/*"}
    identity = [allow("s3:*", "*"), outside]
    assert evaluate(get("lake/x"), identity, account=ACCOUNT).allowed
    assert not evaluate(get("hospital/x"), identity, account=ACCOUNT).allowed


def test_arn_like_matches_each_part():
    ctx = {"aws:SourceArn": "arn:aws:iot:eu-west-1:123456789012:rule/telemetry"}
    assert condition_holds("ArnLike", "aws:SourceArn", "arn:aws:iot:*:123456789012:rule/*", ctx)
    assert not condition_holds("ArnLike", "aws:SourceArn", "arn:aws:iot:*:999999999999:*", ctx)
