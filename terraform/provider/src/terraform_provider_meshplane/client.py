"""The boto3 App Mesh client the provider calls, configured like every other client.

Settings come from the provider block, then MESHPLANE_* environment variables, then an
AWS-style profile (`endpoint_url`, keys and region in ~/.aws/config and credentials).
"""

from __future__ import annotations

import os
from typing import Any

ENV = {
    "endpoint": "MESHPLANE_ENDPOINT",
    "access_key_id": "MESHPLANE_ACCESS_KEY_ID",
    "secret_access_key": "MESHPLANE_SECRET_ACCESS_KEY",
    "region": "MESHPLANE_REGION",
    "profile": "MESHPLANE_PROFILE",
}


class ConfigError(Exception):
    """A provider setting is missing or wrong; `attribute` names it."""

    def __init__(self, attribute: str | None, message: str) -> None:
        super().__init__(message)
        self.attribute = attribute


def setting(config: dict[str, Any], name: str) -> str | None:
    value = config.get(name)
    if value:
        return value
    return os.environ.get(ENV[name]) or None


def make_client(config: dict[str, Any]) -> Any:
    """An `appmesh` client for the configured Meshplane endpoint and key.

    Refuses to fall back to AWS's own endpoint: with no endpoint anywhere, boto3 would
    send the tenant's key to appmesh.<region>.amazonaws.com.
    """
    # Imported here: only a configured provider needs boto3, and Terraform starts a
    # provider just to read its schema too.
    import boto3
    from botocore.config import Config

    profile = setting(config, "profile")
    try:
        session = boto3.Session(profile_name=profile)
    except Exception as exc:  # botocore's ProfileNotFound and friends
        raise ConfigError("profile", f"profile: {exc}") from exc
    key_id, secret = setting(config, "access_key_id"), setting(config, "secret_access_key")
    if bool(key_id) != bool(secret):
        missing = "secret_access_key" if key_id else "access_key_id"
        raise ConfigError(
            missing,
            f"{missing}: set it too (or {ENV[missing]}); an access key needs both parts.",
        )
    region = setting(config, "region") or session.region_name or "us-east-1"
    client = session.client(
        "appmesh",
        endpoint_url=setting(config, "endpoint"),
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10,
            read_timeout=60,
        ),
    )
    if "amazonaws.com" in client.meta.endpoint_url:
        raise ConfigError(
            "endpoint",
            "endpoint: no Meshplane endpoint is configured; set endpoint in the provider "
            "block, MESHPLANE_ENDPOINT, or endpoint_url in the profile.",
        )
    if client._request_signer._credentials is None:  # noqa: SLF001 - fail early, by name
        raise ConfigError(
            "access_key_id",
            "access_key_id: no credentials found; set access_key_id and secret_access_key, "
            "MESHPLANE_ACCESS_KEY_ID and MESHPLANE_SECRET_ACCESS_KEY, or a profile.",
        )
    return client
