"""Join and Renew over a real grpc.aio server on loopback with TLS: Join on a port
without client certificates, Renew on an mTLS port whose TLS accepts every mesh CA."""

import asyncio
import threading
from datetime import timedelta

import grpc
import pytest
from cryptography import x509
from django.db import connections
from django.utils import timezone

from meshapi.models import Mesh
from tenants import crypto
from tenants.identity import client, pki
from tenants.identity import services as identity
from tenants.identity.grpc_service import identity_handlers
from tenants.models import AuditEvent
from tests.identity.conftest import token_for
from tests.identity.test_services import ACME_CART


class AioServer:
    """A grpc.aio server on its own event loop thread, as `serve_xds` would run it."""

    def __init__(self, credentials, *, allow_join: bool, allow_renew: bool) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start():
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((identity_handlers(allow_join, allow_renew),))
            port = server.add_secure_port("127.0.0.1:0", credentials)
            await server.start()
            return server, port

        self.server, port = self._run(start())
        self.target = f"127.0.0.1:{port}"

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        self._run(self.server.stop(None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def ports(acme, transactional_db, monkeypatch):
    # Handler threads close their connections after each call, so none outlives the test.
    monkeypatch.setitem(connections.databases["default"], "CONN_MAX_AGE", 0)
    identity.ensure_mesh_ca(Mesh.objects.get(tenant=acme, name="lab"))
    chain, key, ca = identity.server_credentials_pem(["localhost"])
    join_port = AioServer(
        grpc.ssl_server_credentials([(key, chain)]), allow_join=True, allow_renew=False
    )
    identity.ensure_mesh_ca(Mesh.objects.get(tenant=acme, name="shop"))
    mtls = grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=identity.trust_roots_pem(), require_client_auth=True
    )
    ads_port = AioServer(mtls, allow_join=False, allow_renew=True)
    yield join_port, ads_port, ca
    join_port.stop()
    ads_port.stop()


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_join_then_renew_with_mtls(acme, ports):
    join_port, ads_port, ca = ports
    key_pem, csr_pem = client.new_key_and_csr(ACME_CART)
    joined = client.join(join_port.target, token_for(acme), csr_pem, root_ca_pem=ca)
    assert joined["spiffeId"] == ACME_CART
    leaf = x509.load_pem_x509_certificate(joined["certificate"].encode())
    assert pki.cert_uris(leaf) == [ACME_CART]
    assert joined["notAfter"] == leaf.not_valid_after_utc.isoformat().replace("+00:00", "Z")
    bundle = x509.load_pem_x509_certificates(joined["trustBundle"].encode())
    assert any(pki.signed_by(leaf, root) for root in bundle)
    assert joined["chain"].startswith(joined["certificate"])

    # Renew: the TLS client certificate is the proof; a new key, the same identity.
    new_key, new_csr = client.new_key_and_csr(ACME_CART)
    renewed = client.renew(ads_port.target, new_csr, key_pem, joined["chain"].encode(), ca)
    assert renewed["spiffeId"] == ACME_CART
    renewed_leaf = x509.load_pem_x509_certificate(renewed["certificate"].encode())
    assert renewed_leaf.serial_number != leaf.serial_number
    # ...and the renewed certificate works for the next renewal.
    again = client.renew(ads_port.target, new_csr, new_key, renewed["chain"].encode(), ca)
    assert again["spiffeId"] == ACME_CART
    assert AuditEvent.objects.filter(tenant=acme, action="RenewCertificate").count() == 2


def test_refusals_carry_the_status_and_the_reason(acme, ports):
    join_port, ads_port, ca = ports
    key_pem, csr_pem = client.new_key_and_csr(ACME_CART)
    code, details = _code(
        lambda: client.join(join_port.target, "mpjt_nope", csr_pem, root_ca_pem=ca)
    )
    assert code is grpc.StatusCode.UNAUTHENTICATED and "join token" in details

    _, other_csr = client.new_key_and_csr(ACME_CART.replace("/cart", "/web"))
    token = token_for(acme)
    code, details = _code(lambda: client.join(join_port.target, token, other_csr, root_ca_pem=ca))
    assert code is grpc.StatusCode.PERMISSION_DENIED and "virtualNode/web" in details

    code, details = _code(lambda: client.join(join_port.target, token, b"junk", root_ca_pem=ca))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith("csr:")

    # Join is not served on the mTLS port, Renew not on the join port.
    joined = client.join(join_port.target, token, csr_pem, root_ca_pem=ca)
    chain = joined["chain"].encode()
    code, _ = _code(lambda: client.renew(join_port.target, csr_pem, key_pem, chain, ca))
    assert code is grpc.StatusCode.UNIMPLEMENTED

    # A certificate the TLS layer accepts (signed by a CA in the union: acme's mesh lab)
    # but naming acme/shop/cart: refused by authenticate_peer.
    lab = Mesh.objects.get(tenant=acme, name="lab").cas.get()
    forged_key, forged_csr = client.new_key_and_csr(ACME_CART)
    forged = _forge_with_key(lab, ACME_CART, forged_key)
    code, details = _code(lambda: client.renew(ads_port.target, forged_csr, forged_key, forged, ca))
    assert (
        code is grpc.StatusCode.UNAUTHENTICATED and "not signed by a CA of mesh 'shop'" in details
    )
    assert AuditEvent.objects.filter(tenant=acme, action="AuthenticateRefused").exists()


def _forge_with_key(ca_row, spiffe: str, key_pem: bytes) -> bytes:
    """A leaf for `spiffe` on the caller's own key, signed by another mesh's CA."""
    key = pki.load_key(key_pem.decode())
    ca_cert = x509.load_pem_x509_certificate(ca_row.certificate_pem.encode())
    now = timezone.now()
    cert = pki.leaf(
        ca_cert,
        pki.load_key(crypto.decrypt(ca_row.key_encrypted)),
        key.public_key(),
        not_before=now - timedelta(minutes=1),
        not_after=now + timedelta(hours=1),
        uris=(spiffe,),
    )
    return (pki.cert_pem(cert) + ca_row.certificate_pem).encode()
