"""Small helpers over a boto3 `appmesh` client, shared by the App Mesh e2e suites."""

import re
from contextlib import contextmanager

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.e2e.specs import REGION


def client_for(persona, key_id: str | None = None, secret: str | None = None, **config):
    """A boto3 `appmesh` client that never retries, so a 500 or a throttle is seen as it is.

    (botocore's `max_attempts: 1` still allows one retry, which would hide a failed write.)
    """
    return boto3.client(
        "appmesh",
        endpoint_url=persona.base_url,
        region_name=REGION,
        aws_access_key_id=key_id or persona.key_id,
        aws_secret_access_key=secret or persona.secret,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, **config),
    )


def snake(op: str) -> str:
    """ "VirtualNode" -> "virtual_node", the suffix of boto3's method names."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", op).lower()


def key_of(op: str) -> str:
    """ "VirtualNode" -> "virtualNode", the key of the resource in a response."""
    return op[0].lower() + op[1:]


def call(client, verb: str, op: str, **params) -> dict:
    """`call(client, "describe", "VirtualNode", ...)` -> the resource (the response's one key)."""
    response = getattr(client, f"{verb}_{snake(op)}")(**params)
    return response[key_of(op)]


@contextmanager
def raises(code: str, *fragments: str):
    """Expect an App Mesh error of type `code` whose message contains every fragment."""
    with pytest.raises(ClientError) as info:
        yield info
    error = info.value.response["Error"]
    assert error["Code"] == code, error
    for fragment in fragments:
        assert fragment in error["Message"], error


def names_in(page: list[dict], field: str) -> list[str]:
    return [item[field] for item in page]
