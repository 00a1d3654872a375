"""Mesh identity on real PostgreSQL: joining, renewing, authenticating peers, rotation."""

import base64
import textwrap
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.utils import timezone

from meshapi.models import Mesh
from meshapi.services import resources
from meshapi.services.kinds import MESH, VIRTUAL_NODE
from tenants import crypto
from tenants.identity import pki
from tenants.identity import services as identity
from tenants.identity.models import JoinToken, MeshCA
from tenants.models import AuditEvent
from tests.identity.conftest import WRITER, key_and_csr, token_for
from workers import loader

ACME_CART = "spiffe://111111111111.meshplane.local/mesh/shop/virtualNode/cart"


def certs(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


def chains_to(leaf: x509.Certificate, bundle_pem: str) -> bool:
    return any(pki.signed_by(leaf, ca) for ca in certs(bundle_pem))


def refused(code: str, fragment: str):
    """Context: the call raises IdentityError with this code and a message naming it."""

    class Check:
        def __enter__(self):
            return self

        def __exit__(self, kind, exc, tb):
            assert kind is identity.IdentityError, f"expected {code}, got {kind}: {exc}"
            assert exc.code == code, (exc.code, exc.message)
            assert fragment in exc.message, exc.message
            return True

    return Check()


def join_cart(tenant, **kw) -> identity.Issued:
    _, csr = key_and_csr(ACME_CART)
    return identity.join(token_for(tenant, **kw), csr)


# ---------------------------------------------------------------- join


def test_join_issues_a_spiffe_certificate_that_chains_to_the_mesh_bundle(acme):
    assert identity.trust_domain(acme) == "111111111111.meshplane.local"
    assert identity.mesh_trust_bundle(Mesh.objects.get(tenant=acme, name="shop")) == ""
    token = token_for(acme)
    _, csr = key_and_csr(ACME_CART)
    before = timezone.now()
    issued = identity.join(token, csr)

    leaf = certs(issued.certificate_pem)[0]
    assert pki.cert_uris(leaf) == [ACME_CART] and issued.spiffe_id == ACME_CART
    ca = MeshCA.objects.get(mesh__tenant=acme, mesh__name="shop")
    ca_cert = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    assert leaf.issuer == ca_cert.subject and pki.signed_by(leaf, ca_cert)
    lifetime = leaf.not_valid_after_utc - before
    assert timedelta(hours=24) - timedelta(seconds=5) < lifetime <= timedelta(hours=24, seconds=5)
    assert issued.not_after == leaf.not_valid_after_utc
    chain = certs(issued.chain_pem)
    assert chain[0] == leaf and chain[1] == ca_cert
    assert chains_to(leaf, issued.trust_bundle_pem)
    assert issued.trust_bundle_pem == identity.mesh_trust_bundle(ca.mesh)
    assert "PRIVATE KEY" not in ca.key_encrypted  # encrypted at rest
    assert "PRIVATE KEY" in crypto.decrypt(ca.key_encrypted)
    row = JoinToken.objects.get(tenant=acme)
    assert row.uses == 1 and token not in row.digest
    event = AuditEvent.objects.get(tenant=acme, action="JoinMesh")
    assert event.resource_arn == ACME_CART


def test_a_csr_without_a_uri_san_gets_the_tokens_identity(acme):
    _, csr = key_and_csr()
    issued = identity.join(token_for(acme, name="edge", kind="virtualGateway"), csr)
    assert issued.spiffe_id.endswith("/mesh/shop/virtualGateway/edge")


def test_wrong_token_is_refused(acme):
    good = token_for(acme)
    _, csr = key_and_csr(ACME_CART)
    with refused("UNAUTHENTICATED", "not a join token"):
        identity.join("hello", csr)
    with refused("UNAUTHENTICATED", "unknown join token"):
        identity.join(good[:-4] + "AAAA", csr)
    with refused("UNAUTHENTICATED", "unknown join token"):
        identity.join("mpjt_000000000000_" + "x" * 43, csr)
    assert JoinToken.objects.get(tenant=acme).uses == 0


def test_expired_revoked_and_used_up_tokens_are_refused_and_audited(acme, clock):
    _, csr = key_and_csr(ACME_CART)
    short = token_for(acme, expires_in=timedelta(minutes=5))
    clock.advance(minutes=6)
    with refused("UNAUTHENTICATED", "expired"):
        identity.join(short, csr)

    revoked = identity.create_join_token(
        acme, "shop", kind="virtualNode", node_name="cart", actor="t"
    )
    identity.revoke_join_token(acme, "shop", revoked.token.token_id, actor="alice")
    with refused("UNAUTHENTICATED", "revoked"):
        identity.join(revoked.secret, csr)

    once = token_for(acme, max_uses=1)
    identity.join(once, csr)
    with refused("UNAUTHENTICATED", "used its 1 time"):
        identity.join(once, csr)

    actions = list(
        AuditEvent.objects.filter(tenant=acme, action="JoinMeshRefused").values_list(
            "after__code", flat=True
        )
    )
    assert actions == ["UNAUTHENTICATED"] * 3
    assert AuditEvent.objects.filter(tenant=acme, action="RevokeJoinToken").count() == 1


def test_pattern_token_joins_matching_nodes_only(acme):
    token = token_for(acme, name_pattern="cart-*", max_uses=5)
    for name in ("cart-1", "cart-2"):
        sid = f"spiffe://111111111111.meshplane.local/mesh/shop/virtualNode/{name}"
        _, csr = key_and_csr(sid)
        issued = identity.join(token, csr, node_id=f"mesh/shop/virtualNode/{name}")
        assert issued.spiffe_id == sid
    _, csr = key_and_csr()
    with refused("INVALID_ARGUMENT", "nodeId"):
        identity.join(token, csr)
    with refused("PERMISSION_DENIED", "does not match"):
        identity.join(token, csr, node_id="mesh/shop/virtualNode/web")
    with refused("PERMISSION_DENIED", "not mesh/lab/virtualNode/cart-1"):
        identity.join(token, csr, node_id="mesh/lab/virtualNode/cart-1")
    with refused("PERMISSION_DENIED", "does not exist"):
        identity.join(token, csr, node_id="mesh/shop/virtualNode/cart-9")
    with refused("INVALID_ARGUMENT", "not of the form"):
        identity.join(token, csr, node_id="shop/cart-1")
    assert JoinToken.objects.get(tenant=acme).uses == 2


def test_csr_for_another_node_or_badly_made_is_refused_and_uses_nothing(acme):
    token = token_for(acme, max_uses=1)
    _, other = key_and_csr("spiffe://111111111111.meshplane.local/mesh/shop/virtualNode/web")
    with refused("PERMISSION_DENIED", "may only be " + ACME_CART):
        identity.join(token, other)
    with refused("PERMISSION_DENIED", "not mesh/shop/virtualNode/web"):
        identity.join(token, key_and_csr()[1], node_id="mesh/shop/virtualNode/web")

    # Another tenant's trust domain, same mesh and node names: still another identity.
    _, foreign = key_and_csr(ACME_CART.replace("111111111111", "222222222222"))
    with refused("PERMISSION_DENIED", "may only be"):
        identity.join(token, foreign)

    _, good = key_and_csr(ACME_CART)
    bad_sig = _break_signature(good)
    with refused("INVALID_ARGUMENT", "signature"):
        identity.join(token, bad_sig)
    with refused("INVALID_ARGUMENT", "not a PEM"):
        identity.join(token, b"not a csr")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with refused("INVALID_ARGUMENT", "1024-bit RSA"):
        identity.join(token, pki.new_csr(ACME_CART, weak))
    odd_curve = ec.generate_private_key(ec.SECP256K1())
    with refused("INVALID_ARGUMENT", "secp256k1"):
        identity.join(token, pki.new_csr(ACME_CART, odd_curve))

    assert identity.join(token, good).spiffe_id == ACME_CART  # nothing was used up


def _break_signature(csr_pem: bytes) -> bytes:
    """The same CSR with its signature's last byte flipped."""
    der = bytearray(x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    body = "\n".join(textwrap.wrap(base64.b64encode(bytes(der)).decode(), 64))
    return (
        f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n".encode()
    )


# ---------------------------------------------------------------- renew and authenticate


def test_renew_keeps_the_identity_with_a_new_key(acme):
    issued = join_cart(acme)
    peer = identity.authenticate_peer(issued.chain_pem.encode())
    assert (peer.tenant, peer.mesh.name, peer.kind, peer.name) == (
        acme,
        "shop",
        "virtualNode",
        "cart",
    )
    assert peer.node_id == "mesh/shop/virtualNode/cart" and peer.spiffe_id == ACME_CART
    old_leaf = certs(issued.certificate_pem)[0]
    assert peer.serial == old_leaf.serial_number and peer.not_after == old_leaf.not_valid_after_utc

    new_key, csr = key_and_csr(ACME_CART)
    renewed = identity.renew(peer, csr)
    leaf = certs(renewed.certificate_pem)[0]
    assert pki.cert_uris(leaf) == [ACME_CART] and leaf.serial_number != peer.serial
    assert leaf.public_key().public_numbers() == new_key.public_key().public_numbers()
    assert identity.authenticate_peer(renewed.certificate_pem.encode()).node_id == peer.node_id

    _, other = key_and_csr("spiffe://111111111111.meshplane.local/mesh/shop/virtualNode/web")
    with refused("PERMISSION_DENIED", "may only be " + ACME_CART):
        identity.renew(peer, other)
    assert AuditEvent.objects.filter(tenant=acme, action="RenewCertificate").count() == 1
    assert AuditEvent.objects.filter(tenant=acme, action="RenewCertificateRefused").count() == 1


def _forge(signing_ca: MeshCA, spiffe: str, **validity) -> bytes:
    """A leaf for `spiffe` signed with another CA's real key."""
    now = timezone.now()
    ca_cert = x509.load_pem_x509_certificate(signing_ca.certificate_pem.encode())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = pki.leaf(
        ca_cert,
        pki.load_key(crypto.decrypt(signing_ca.key_encrypted)),
        key.public_key(),
        not_before=validity.get("not_before", now - timedelta(minutes=1)),
        not_after=validity.get("not_after", now + timedelta(hours=1)),
        uris=(spiffe,),
    )
    return pki.cert_pem(cert).encode()


def test_certificates_from_another_meshs_or_tenants_ca_are_refused(acme, globex):
    join_cart(acme)  # acme/shop has a CA
    lab = identity.ensure_mesh_ca(Mesh.objects.get(tenant=acme, name="lab"))
    globex_shop = identity.ensure_mesh_ca(Mesh.objects.get(tenant=globex, name="shop"))

    # Another mesh of the same tenant signs a leaf naming acme/shop/cart.
    with refused("UNAUTHENTICATED", "not signed by a CA of mesh 'shop'"):
        identity.authenticate_peer(_forge(lab, ACME_CART))
    # Another tenant's CA (a mesh of the same name) signs a leaf in acme's trust domain.
    with refused("UNAUTHENTICATED", "not signed by a CA of mesh 'shop'"):
        identity.authenticate_peer(_forge(globex_shop, ACME_CART))
    # Both CAs are in the union the TLS layer accepts, which is why this check matters.
    roots = identity.trust_roots_pem().decode()
    assert lab.certificate_pem in roots and globex_shop.certificate_pem in roots

    # Globex's own certificate authenticates as globex, never as acme.
    globex_cart = ACME_CART.replace("111111111111", "222222222222")
    peer = identity.authenticate_peer(_forge(globex_shop, globex_cart))
    assert peer.tenant == globex and peer.mesh.tenant == globex

    with refused("UNAUTHENTICATED", "not known here"):
        identity.authenticate_peer(_forge(lab, ACME_CART.replace("111111111111", "333333333333")))
    with refused("UNAUTHENTICATED", "not a Meshplane SPIFFE id"):
        identity.authenticate_peer(_forge(lab, "spiffe://111111111111.meshplane.local/cart"))
    with refused("UNAUTHENTICATED", "not a PEM"):
        identity.authenticate_peer(b"garbage")
    refusals = AuditEvent.objects.filter(tenant=acme, action="AuthenticateRefused").count()
    assert refusals == 2  # the two forgeries naming acme's trust domain


def test_expired_and_not_yet_valid_certificates_are_refused(acme, clock):
    identity.set_certificate_lifetime(acme, "shop", 10, actor="t")
    issued = join_cart(acme)
    leaf = certs(issued.certificate_pem)[0]
    assert leaf.not_valid_after_utc - timezone.now() <= timedelta(seconds=10)
    assert identity.authenticate_peer(issued.certificate_pem.encode()).name == "cart"
    clock.advance(seconds=11)
    with refused("UNAUTHENTICATED", "expired"):
        identity.authenticate_peer(issued.certificate_pem.encode())

    ca = MeshCA.objects.get(mesh__tenant=acme, mesh__name="shop")
    later = timezone.now() + timedelta(hours=1)
    future = _forge(ca, ACME_CART, not_before=later, not_after=later + timedelta(hours=1))
    with refused("UNAUTHENTICATED", "not valid before"):
        identity.authenticate_peer(future)


def test_a_deleted_node_or_mesh_is_permission_denied(acme):
    web = "spiffe://111111111111.meshplane.local/mesh/shop/virtualNode/web"
    _, csr = key_and_csr(web)
    web_pem = identity.join(token_for(acme, name="web"), csr).certificate_pem.encode()
    cart_pem = join_cart(acme).certificate_pem.encode()
    resources.delete(acme, VIRTUAL_NODE, WRITER, mesh_name="shop", name="web")
    with refused("PERMISSION_DENIED", "'web' no longer exists"):
        identity.authenticate_peer(web_pem)
    assert identity.authenticate_peer(cart_pem).name == "cart"

    lab_token = token_for(acme, mesh="lab", name="web")
    _, lab_csr = key_and_csr()
    lab_pem = identity.join(lab_token, lab_csr).certificate_pem.encode()
    _delete_mesh(acme, "lab")
    with refused("PERMISSION_DENIED", "mesh 'lab'"):
        identity.authenticate_peer(lab_pem)


def _delete_mesh(tenant, mesh):
    from meshapi.services.kinds import VIRTUAL_GATEWAY

    for name in ("cart", "cart-1", "cart-2", "web"):
        resources.delete(tenant, VIRTUAL_NODE, WRITER, mesh_name=mesh, name=name)
    resources.delete(tenant, VIRTUAL_GATEWAY, WRITER, mesh_name=mesh, name="edge")
    resources.delete(tenant, MESH, WRITER, mesh_name=mesh, name=mesh)


# ---------------------------------------------------------------- rotation


def test_rotation_keeps_the_old_root_until_its_leaves_expire(acme, clock):
    identity.set_certificate_lifetime(acme, "shop", 3600, actor="t")
    mesh = Mesh.objects.get(tenant=acme, name="shop")
    old = join_cart(acme)
    old_ca = certs(old.chain_pem)[1]
    version = identity.trust_roots_version()
    revision = Mesh.objects.get(pk=mesh.pk).revision

    identity.rotate_mesh_ca(acme, "shop", actor="alice")
    assert Mesh.objects.get(pk=mesh.pk).revision == revision + 1  # recompiles the SDS secret
    assert identity.trust_roots_version() != version
    bundle = certs(identity.mesh_trust_bundle(mesh))
    assert len(bundle) == 2 and bundle[0] == old_ca

    clock.advance(minutes=30)
    new = join_cart(acme)
    new_ca = certs(new.chain_pem)[1]
    assert new_ca != old_ca and new_ca == bundle[1]  # the new CA signs from now on
    assert certs(new.trust_bundle_pem) == bundle
    # The old leaf still authenticates while it is valid.
    assert identity.authenticate_peer(old.certificate_pem.encode()).name == "cart"
    assert identity.retire_expired_cas() == 0

    clock.advance(minutes=31)  # the old CA's last leaf has expired
    assert certs(identity.mesh_trust_bundle(mesh)) == [new_ca]
    assert loader.load(mesh.pk).ctx.trust_bundle == identity.mesh_trust_bundle(mesh)
    revision = Mesh.objects.get(pk=mesh.pk).revision
    assert identity.retire_expired_cas() == 1
    assert Mesh.objects.get(pk=mesh.pk).revision == revision + 1
    assert identity.retire_expired_cas() == 0
    assert identity.authenticate_peer(new.certificate_pem.encode()).name == "cart"
    event = AuditEvent.objects.get(tenant=acme, action="RotateMeshCA")
    assert event.after["generation"] == 2 and event.before["generation"] == 1


def test_rotating_a_ca_that_signed_nothing_drops_it_at_once(acme):
    mesh = Mesh.objects.get(tenant=acme, name="lab")
    first = identity.ensure_mesh_ca(mesh)
    second = identity.rotate_mesh_ca(acme, "lab", actor="t")
    assert identity.mesh_trust_bundle(mesh) == second.certificate_pem
    assert first.certificate_pem not in identity.trust_roots_pem().decode()
    lab_web = "spiffe://111111111111.meshplane.local/mesh/lab/virtualNode/web"
    with refused("UNAUTHENTICATED", "generation 1 of mesh 'lab', which is no longer trusted"):
        identity.authenticate_peer(_forge(first, lab_web))
    assert identity.authenticate_peer(_forge(second, lab_web)).name == "web"


def test_certificate_lifetime_bounds(acme):
    for bad in (9, 30 * 24 * 3600 + 1):
        with pytest.raises(identity.RuleViolation) as info:
            identity.set_certificate_lifetime(acme, "shop", bad, actor="t")
        assert info.value.field == "certificateLifetimeSeconds"
    with pytest.raises(identity.NotFound):
        identity.set_certificate_lifetime(acme, "nope", 60, actor="t")


# ---------------------------------------------------------------- control plane TLS


def test_server_credentials_name_the_hosts_and_chain_to_the_published_ca(db):
    chain, key, ca = identity.server_credentials_pem(["xds.example.com", "10.1.2.3"])
    server = x509.load_pem_x509_certificates(chain)[0]
    ca_cert = x509.load_pem_x509_certificate(ca)
    assert pki.signed_by(server, ca_cert)
    assert ca.decode() == identity.control_plane_ca_pem()
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"xds.example.com", "localhost"} <= set(san.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert {"10.1.2.3", "127.0.0.1", "::1"} <= ips
    assert b"PRIVATE KEY" in key
    # The CA is made once and kept: a second server certificate chains to the same one.
    assert identity.server_credentials_pem([])[2] == ca
