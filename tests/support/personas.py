"""alice (admin of acme), bob (read-only viewer of acme), charlie (admin of globex)."""

import json
from dataclasses import dataclass

import boto3
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from tenants.models import Role, Tenant
from tenants.services import add_member, create_access_key, create_tenant

REGION = "us-east-1"


@dataclass
class Persona:
    name: str
    tenant: Tenant
    key_id: str
    secret: str
    base_url: str

    def appmesh(self, **config):
        return boto3.client(
            "appmesh",
            endpoint_url=self.base_url,
            region_name=REGION,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            config=Config(retries={"total_max_attempts": 1}, **config),
        )

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key_id}:{self.secret}"}

    def signed(self, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
        """A SigV4-signed request with any body, for input a boto3 client would refuse to send."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        req = AWSRequest(method=method, url=self.base_url + path, data=data, headers=hdrs)
        SigV4Auth(Credentials(self.key_id, self.secret), "appmesh", REGION).add_auth(req)
        prepared = req.prepare()
        return requests.request(
            method, prepared.url, data=data, headers=dict(prepared.headers), timeout=30
        )


@dataclass
class Personas:
    alice: Persona
    bob: Persona
    charlie: Persona


def make_personas(base_url: str) -> Personas:
    acme, alice_key = create_tenant("acme", "alice@example.com", account_id="111111111111")
    bob_member = add_member(acme, "bob@example.com", Role.VIEWER, actor="test")
    bob_key = create_access_key(acme, bob_member, read_only=True)
    globex, charlie_key = create_tenant("globex", "charlie@example.com", account_id="222222222222")
    return Personas(
        alice=Persona("alice", acme, alice_key.key.key_id, alice_key.secret, base_url),
        bob=Persona("bob", acme, bob_key.key.key_id, bob_key.secret, base_url),
        charlie=Persona("charlie", globex, charlie_key.key.key_id, charlie_key.secret, base_url),
    )
