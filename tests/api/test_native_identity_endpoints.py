"""Mesh identity on the native API: join tokens (create, list, get, revoke) and the mesh's
identity (lifetime, CAs, rotation), held to the endpoint contract; behaviour beyond it below."""

import io

import pytest
import requests
from cryptography import x509
from django.core.management import call_command

from meshapi.models import Mesh
from meshapi.services import resources
from meshapi.services.kinds import MESH, VIRTUAL_NODE
from tenants.identity import services as identity
from tenants.identity.models import JoinToken
from tenants.models import AuditEvent
from tests.identity.conftest import key_and_csr
from tests.support.endpoints import Call, EndpointContract
from tests.support.endpoints import Endpoint as ApiEndpoint

V = "/api/v1"
M = "alicemesh"
WRITER = resources.Writer(actor="test")
NODE_SPEC = {
    "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
    "serviceDiscovery": {"dns": {"hostname": "n.local"}},
}


def build_world(alice) -> dict:
    t = alice.tenant
    resources.create(t, MESH, WRITER, mesh_name=M, name=M, spec={})
    resources.create(t, VIRTUAL_NODE, WRITER, mesh_name=M, name="cart", spec=NODE_SPEC)
    new = identity.create_join_token(
        t, M, kind="virtualNode", node_name="cart", description="deploy", actor="test"
    )
    identity.ensure_mesh_ca(Mesh.objects.get(tenant=t, name=M))
    return {"alice_marker": "alice", "token_id": new.token.token_id, "secret": new.secret}


def _grow_tokens(alice, world):
    for i in range(10):
        identity.create_join_token(
            alice.tenant, M, kind="virtualNode", name_pattern=f"g{i}-*", actor="t"
        )


def _tokens_listed(world, body):
    ids = [t["tokenId"] for t in body["results"]]
    assert world["token_id"] in ids and world["secret"] not in str(body), body


def _token(world, body):
    assert body["tokenId"] == world["token_id"] and body["name"] == "cart", body
    assert body["state"] == "active" and body["uses"] == 0 and "token" not in body, body


def _created(world, body):
    assert body["token"].startswith("mpjt_") and body["state"] == "active", body
    assert body["namePattern"] == "cart-*" and body["maxUses"] == 3, body


def _identity(world, body):
    assert body["trustDomain"] == "111111111111.meshplane.local", body
    assert body["certificateLifetimeSeconds"] == 86400, body
    [ca] = body["certificateAuthorities"]
    assert ca["state"] == "signing" and ca["certificate"] == body["trustBundle"], body


def _lifetime(world, body):
    assert body["certificateLifetimeSeconds"] == 3600, body


def _rotated(world, body):
    states = [ca["state"] for ca in body["certificateAuthorities"]]
    # The old CA signed nothing, so nothing keeps it trusted.
    assert states == ["retired", "signing"], body


def E(id_, method, path, write=False, **kw) -> ApiEndpoint:  # noqa: N802 - a table row
    body = kw.pop("body", None)
    return ApiEndpoint(
        f"native {id_}", "native", write, lambda w: Call(method, V + path(w), body), **kw
    )


def _p(template):
    return lambda w: template.format(**w, M=M)


ENDPOINTS = [
    E("ListJoinTokens", "GET", _p("/meshes/{M}/join-tokens/"), check=_tokens_listed, grow=_grow_tokens),
    E("CreateJoinToken", "POST", _p("/meshes/{M}/join-tokens/"), True, body={"namePattern": "cart-*", "maxUses": 3}, ok_status=201, check=_created),
    E("GetJoinToken", "GET", _p("/meshes/{M}/join-tokens/{token_id}"), check=_token),
    E("RevokeJoinToken", "DELETE", _p("/meshes/{M}/join-tokens/{token_id}"), True, ok_status=204),
    E("GetMeshIdentity", "GET", _p("/meshes/{M}/identity"), check=_identity),
    E("UpdateMeshIdentity", "PATCH", _p("/meshes/{M}/identity"), True, body={"certificateLifetimeSeconds": 3600}, check=_lifetime),
    E("RotateMeshCA", "POST", _p("/meshes/{M}/identity/rotate"), True, check=_rotated),
]  # fmt: skip


class TestNativeIdentityEndpoints(EndpointContract):
    ENDPOINTS = ENDPOINTS

    @pytest.fixture
    def world(self, alice):
        return build_world(alice)


@pytest.fixture
def world(alice):
    return build_world(alice)


def _post(persona, path, body):
    return requests.post(persona.base_url + V + path, json=body, headers=persona.bearer, timeout=30)


def test_bad_token_requests_answer_400_naming_the_field(alice, world):
    path = f"/meshes/{M}/join-tokens/"
    cases = [
        ({"name": "cart", "namePattern": "cart-*"}, "name"),
        ({}, "name"),
        ({"namePattern": "cart"}, "namePattern"),
        ({"name": "a/b"}, "name"),
        ({"name": "cart", "kind": "pod"}, "kind"),
        ({"name": "cart", "maxUses": 0}, "maxUses"),
        ({"name": "cart", "expiresInSeconds": 31 * 86400}, "expiresInSeconds"),
        ({"name": "cart", "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        response = _post(alice, path, body)
        assert response.status_code == 400, (body, response.text)
        assert field in response.json(), (body, response.text)
    assert JoinToken.objects.filter(tenant=alice.tenant).count() == 1  # only the world's
    response = _post(alice, "/meshes/nope/join-tokens/", {"name": "cart"})
    assert response.status_code == 404 and "nope" in response.text
    response = requests.patch(
        alice.base_url + V + f"/meshes/{M}/identity",
        json={"certificateLifetimeSeconds": 5},
        headers=alice.bearer,
        timeout=30,
    )
    assert response.status_code == 400 and "certificateLifetimeSeconds" in response.json()


def test_a_token_from_the_api_joins_once_and_revoked_joins_nothing(alice, charlie, world):
    created = _post(alice, f"/meshes/{M}/join-tokens/", {"name": "cart", "maxUses": 2})
    assert created.status_code == 201, created.text
    token, token_id = created.json()["token"], created.json()["tokenId"]
    got = requests.get(
        alice.base_url + V + f"/meshes/{M}/join-tokens/{token_id}", headers=alice.bearer, timeout=30
    )
    assert token not in got.text  # shown once
    _, csr = key_and_csr()
    issued = identity.join(token, csr)
    assert issued.spiffe_id == f"spiffe://111111111111.meshplane.local/mesh/{M}/virtualNode/cart"

    # charlie cannot revoke it (404), alice can; then it joins nothing.
    url = alice.base_url + V + f"/meshes/{M}/join-tokens/{token_id}"
    assert requests.delete(url, headers=charlie.bearer, timeout=30).status_code == 404
    assert requests.delete(url, headers=alice.bearer, timeout=30).status_code == 204
    body = requests.get(url, headers=alice.bearer, timeout=30).json()
    assert body["state"] == "revoked" and body["uses"] == 1, body
    with pytest.raises(identity.IdentityError) as info:
        identity.join(token, csr)
    assert info.value.code == "UNAUTHENTICATED" and "revoked" in info.value.message
    actions = set(AuditEvent.objects.filter(tenant=alice.tenant).values_list("action", flat=True))
    assert {"CreateJoinToken", "RevokeJoinToken", "JoinMesh", "JoinMeshRefused"} <= actions
    event = AuditEvent.objects.get(
        tenant=alice.tenant, action="CreateJoinToken", actor__contains="@"
    )
    assert event.actor.startswith("alice@example.com")


def test_control_plane_ca_is_public_and_matches_the_command(alice, api_server):
    response = requests.get(api_server.url + V + "/identity/ca", timeout=30)
    assert response.status_code == 200, response.text
    ca = x509.load_pem_x509_certificate(response.content)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    out = io.StringIO()
    call_command("identity_ca", stdout=out)
    assert out.getvalue().encode() == response.content


def test_rotation_through_the_api_keeps_the_old_ca_while_it_has_live_certificates(alice, world):
    _, csr = key_and_csr()
    identity.join(world["secret"], csr)  # a live certificate from the first CA
    url = alice.base_url + V + f"/meshes/{M}/identity"
    rotated = requests.post(url + "/rotate", headers=alice.bearer, timeout=30)
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    cas = body["certificateAuthorities"]
    assert [(ca["generation"], ca["state"]) for ca in cas] == [(1, "trusted"), (2, "signing")]
    assert cas[0]["lastLeafNotAfter"] is not None
    assert body["trustBundle"] == cas[0]["certificate"] + cas[1]["certificate"]
    assert AuditEvent.objects.filter(tenant=alice.tenant, action="RotateMeshCA").count() == 1
