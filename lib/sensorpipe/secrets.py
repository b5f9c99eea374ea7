"""Secrets at the point of use: from an environment variable or AWS Secrets Manager, never from
configuration files, and never printed."""

from __future__ import annotations

import os
from collections.abc import Mapping


class SecretError(RuntimeError):
    """A configured secret cannot be read; the message names the setting, never the value."""


def secret_value(
    setting: str,
    env_name: str | None,
    secret_id: str | None = None,
    environ: Mapping[str, str] | None = None,
    region: str | None = None,
) -> str | None:
    """The secret named by `env_name` (an environment variable) or `secret_id` (Secrets
    Manager); None when neither is configured. `setting` names the field in errors."""
    environ = os.environ if environ is None else environ
    if env_name:
        if environ.get(env_name):
            return environ[env_name]
        if not secret_id:
            raise SecretError(f"{setting} names {env_name}, which is not set in the environment")
    if secret_id:
        import boto3

        try:
            client = boto3.client("secretsmanager", region_name=region)
            return client.get_secret_value(SecretId=secret_id)["SecretString"]
        except Exception as exc:  # noqa: BLE001 - any failure means the job cannot start
            raise SecretError(
                f"{setting}: cannot read secret {secret_id}: {type(exc).__name__}"
            ) from None
    return None
