"""Meshes, tokens and keys for the identity tests, made through the service functions."""

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from meshapi.services import resources
from meshapi.services.kinds import MESH, VIRTUAL_GATEWAY, VIRTUAL_NODE
from tenants.identity import pki
from tenants.identity import services as identity
from tenants.services import create_tenant

WRITER = resources.Writer(actor="test")
LISTENERS = [{"portMapping": {"port": 8080, "protocol": "http"}}]


def make_mesh(tenant, mesh: str, nodes=("cart", "cart-1", "cart-2", "web"), gateways=("edge",)):
    resources.create(tenant, MESH, WRITER, mesh_name=mesh, name=mesh, spec={})
    for name in nodes:
        spec = {"listeners": LISTENERS, "serviceDiscovery": {"dns": {"hostname": f"{name}.local"}}}
        resources.create(tenant, VIRTUAL_NODE, WRITER, mesh_name=mesh, name=name, spec=spec)
    for name in gateways:
        spec = {"listeners": LISTENERS}
        resources.create(tenant, VIRTUAL_GATEWAY, WRITER, mesh_name=mesh, name=name, spec=spec)


def key_and_csr(spiffe_id: str = "", key=None):
    """A fresh P-256 key and a CSR naming `spiffe_id` (no URI SAN when empty)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    if spiffe_id:
        return key, pki.new_csr(spiffe_id, key)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM)


class Clock:
    """Moves `django.utils.timezone.now` forward for everything that reads it."""

    def __init__(self, monkeypatch) -> None:
        self.offset = timedelta()
        real = timezone.now
        monkeypatch.setattr(timezone, "now", lambda: real() + self.offset)

    def advance(self, **kw) -> None:
        self.offset += timedelta(**kw)


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


@pytest.fixture
def acme(db):
    tenant, _ = create_tenant("acme", "alice@example.com", account_id="111111111111")
    make_mesh(tenant, "shop")
    make_mesh(tenant, "lab")
    return tenant


@pytest.fixture
def globex(db):
    tenant, _ = create_tenant("globex", "charlie@example.com", account_id="222222222222")
    make_mesh(tenant, "shop")  # same mesh name as acme's: names repeat across tenants
    return tenant


def token_for(tenant, mesh="shop", name="cart", **kw) -> str:
    kw.setdefault("kind", "virtualNode")
    if "name_pattern" not in kw:
        kw["node_name"] = name
    return identity.create_join_token(tenant, mesh, actor="test", **kw).secret
