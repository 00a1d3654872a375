"""Every native API endpoint (/api/v1/…) held to the endpoint contract.

The schema document and its UI are public and serve no tenant data; they are tested in
test_native_schema.py instead.
"""

import json

import pytest

from meshapi.services import resources
from meshapi.services.kinds import (
    GATEWAY_ROUTE,
    MESH,
    ROUTE,
    VIRTUAL_GATEWAY,
    VIRTUAL_NODE,
    VIRTUAL_ROUTER,
    VIRTUAL_SERVICE,
)
from tenants import services
from tenants.models import DEFAULT_QUOTAS, AuditEvent, Membership, Role
from tests.api.test_native_identity_endpoints import ENDPOINTS as IDENTITY_ENDPOINTS
from tests.api.test_native_mtls import ENDPOINTS as MTLS_ENDPOINTS
from tests.api.test_native_proxies import ENDPOINTS as PIPELINE_ENDPOINTS
from tests.support.endpoints import Call, Endpoint, EndpointContract, send

V = "/api/v1"
M = "alicemesh"
HTTP_LISTENER = [{"portMapping": {"port": 8080, "protocol": "http"}}]
SPECS = {
    MESH: {},
    VIRTUAL_NODE: {
        "listeners": HTTP_LISTENER,
        "serviceDiscovery": {"dns": {"hostname": "n.local"}},
    },
    VIRTUAL_SERVICE: {"provider": {"virtualNode": {"virtualNodeName": "n"}}},
    VIRTUAL_ROUTER: {"listeners": HTTP_LISTENER},
    ROUTE: {
        "httpRoute": {
            "match": {"prefix": "/"},
            "action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]},
        }
    },
    VIRTUAL_GATEWAY: {"listeners": HTTP_LISTENER},
    GATEWAY_ROUTE: {
        "httpRoute": {
            "match": {"prefix": "/"},
            "action": {"target": {"virtualService": {"virtualServiceName": "s.local"}}},
        }
    },
}


def _create(tenant, kind, name, parent="", mesh=M):
    return resources.create(
        tenant,
        kind,
        resources.Writer(actor="test"),
        mesh_name=mesh,
        name=name,
        spec=SPECS[kind],
        tags=[{"key": "team", "value": "cart"}],
        parent_name=parent,
    )


def build_world(alice) -> dict:
    t = alice.tenant
    _create(t, MESH, M)
    _create(t, VIRTUAL_NODE, "n")
    _create(t, VIRTUAL_SERVICE, "s.local")
    _create(t, VIRTUAL_ROUTER, "r")
    _create(t, ROUTE, "rt", parent="r")
    _create(t, VIRTUAL_GATEWAY, "g")
    _create(t, GATEWAY_ROUTE, "gr", parent="g")
    alice_member = Membership.objects.get(tenant=t, user__email="alice@example.com")
    key = services.create_access_key(t, alice_member, description="deploy", actor="test")
    services.add_member(t, "dave@example.com", Role.EDITOR, actor="test")
    event = AuditEvent.objects.filter(tenant=t, action="CreateMesh").get()
    # "alice" is in alice's meshes, members, keys (their email) and audit log, and
    # nowhere in charlie's tenant: a list charlie gets must not contain it.
    return {
        "alice_marker": "alice",
        "key_id": key.key.key_id,
        "key_secret": key.secret,
        "event_id": event.id,
        "account": t.account_id,
    }


# ---------------------------------------------------------------- growth (N+1 checks)


def _grow_resources(kind, parent=""):
    def grow(alice, world):
        for i in range(10):
            name = f"grown{i}"
            if kind is MESH:
                _create(alice.tenant, MESH, name, mesh=name)
            else:
                _create(alice.tenant, kind, name, parent)

    return grow


def _grow_keys(alice, world):
    for member in Membership.objects.filter(tenant=alice.tenant):
        for i in range(4):
            services.create_access_key(alice.tenant, member, description=f"k{i}", actor="t")


def _grow_members(alice, world):
    for i in range(10):
        services.add_member(alice.tenant, f"m{i}@example.com", Role.VIEWER, actor="t")


def _grow_audit(alice, world):
    for i in range(10):
        services.add_member(alice.tenant, f"audited{i}@example.com", Role.VIEWER, actor=f"a{i}")


def _grow_quotas(alice, world):
    for name in list(DEFAULT_QUOTAS)[:5]:
        services.set_quota(alice.tenant, name, 7, actor="operator")


# ---------------------------------------------------------------- checks


def _results(body) -> list:
    return body["results"]


def _listed(key, value):
    def check(world, body):
        assert value in [item[key] for item in _results(body)], body

    return check


def _field(key, value):
    def check(world, body):
        assert body[key] == value, body

    return check


def _no_secret(world, body):
    assert world["key_secret"] not in json.dumps(body)
    assert "secretAccessKey" not in json.dumps(body)


def _keys_listed(world, body):
    _no_secret(world, body)
    assert world["key_id"] in [k["accessKeyId"] for k in _results(body)]


def _me(world, body):
    assert body["slug"] == "acme" and body["accountId"] == world["account"], body
    assert body["role"] == "admin" and body["email"] == "alice@example.com", body


def _new_key(world, body):
    assert body["accessKeyId"].startswith("AKMP") and len(body["secretAccessKey"]) >= 30, body
    assert body["email"] == "alice@example.com" and body["readOnly"] is False, body


def _revoked(world, body):
    assert body["accessKeyId"] == world["key_id"] and body["state"] == "revoked", body


def _mesh(world, body):
    assert body["name"] == M and body["revision"] >= 1 and "compiledRevision" in body, body
    assert body["arn"] == f"arn:aws:appmesh:us-east-1:{world['account']}:mesh/{M}", body
    assert body["tags"] == [{"key": "team", "value": "cart"}], body


def _child(name, arn_suffix):
    def check(world, body):
        assert body["name"] == name and body["meshName"] == M, body
        assert body["arn"].endswith(f":mesh/{M}/{arn_suffix}"), body
        assert body["status"] == "ACTIVE" and body["version"] == 1, body

    return check


def _audit_listed(world, body):
    actions = [e["action"] for e in _results(body)]
    assert "CreateMesh" in actions and "AddMember" in actions, actions


def _quotas(world, body):
    names = [q["name"] for q in _results(body)]
    assert names == list(DEFAULT_QUOTAS), names


def E(id_, method, path, write=False, **kw) -> Endpoint:  # noqa: N802 - reads like a table row
    body = kw.pop("body", None)
    return Endpoint(
        f"native {id_}", "native", write, lambda w: Call(method, V + path(w), body), **kw
    )


def _p(template):
    return lambda w: template.format(**w, M=M)


ENDPOINTS = [
    E("GetTenantMe", "GET", _p("/tenants/me"), check=_me, other_tenant="skip"),
    # access keys (admin only)
    E("ListAccessKeys", "GET", _p("/access-keys/"), check=_keys_listed, other_tenant="empty-list", grow=_grow_keys, extra={"admin_only": True}),
    E("CreateAccessKey", "POST", _p("/access-keys/"), True, body={"description": "ci"}, ok_status=201, check=_new_key, other_tenant="skip"),
    E("GetAccessKey", "GET", _p("/access-keys/{key_id}"), check=lambda w, b: _no_secret(w, b) or _field("description", "deploy")(w, b), extra={"admin_only": True}),
    E("RevokeAccessKey", "POST", _p("/access-keys/{key_id}/revoke"), True, check=_revoked),
    E("DeleteAccessKey", "DELETE", _p("/access-keys/{key_id}"), True, ok_status=204),
    # members (admin only)
    E("ListMembers", "GET", _p("/members/"), check=_listed("email", "dave@example.com"), other_tenant="empty-list", grow=_grow_members, extra={"admin_only": True}),
    E("AddMember", "POST", _p("/members/"), True, body={"email": "Erin@Example.com", "role": "editor"}, ok_status=201, check=_field("email", "erin@example.com"), other_tenant="skip"),
    E("GetMember", "GET", _p("/members/dave@example.com"), check=_field("role", "editor"), extra={"admin_only": True}),
    E("ChangeMemberRole", "PATCH", _p("/members/dave@example.com"), True, body={"role": "viewer"}, check=_field("role", "viewer")),
    E("RemoveMember", "DELETE", _p("/members/dave@example.com"), True, ok_status=204),
    # audit log
    E("ListAuditEvents", "GET", _p("/audit-events/"), check=_audit_listed, other_tenant="empty-list", grow=_grow_audit),
    E("GetAuditEvent", "GET", _p("/audit-events/{event_id}"), check=_field("action", "CreateMesh")),
    # quotas (charlie sees his own tenant's quotas: tested in test_native_quotas.py)
    E("ListQuotas", "GET", _p("/quotas/"), check=_quotas, other_tenant="skip", grow=_grow_quotas),
    E("GetQuota", "GET", _p("/quotas/meshes"), check=_field("limit", 15), other_tenant="skip"),
    # mesh resources (read-only)
    E("ListMeshes", "GET", _p("/meshes/"), check=_listed("name", M), other_tenant="empty-list", grow=_grow_resources(MESH)),
    E("GetMesh", "GET", _p("/meshes/{M}"), check=_mesh),
    E("ListVirtualNodes", "GET", _p("/meshes/{M}/virtual-nodes/"), check=_listed("name", "n"), grow=_grow_resources(VIRTUAL_NODE)),
    E("GetVirtualNode", "GET", _p("/meshes/{M}/virtual-nodes/n"), check=_child("n", "virtualNode/n")),
    E("ListVirtualServices", "GET", _p("/meshes/{M}/virtual-services/"), check=_listed("name", "s.local"), grow=_grow_resources(VIRTUAL_SERVICE)),
    E("GetVirtualService", "GET", _p("/meshes/{M}/virtual-services/s.local"), check=_child("s.local", "virtualService/s.local")),
    E("ListVirtualRouters", "GET", _p("/meshes/{M}/virtual-routers/"), check=_listed("name", "r"), grow=_grow_resources(VIRTUAL_ROUTER)),
    E("GetVirtualRouter", "GET", _p("/meshes/{M}/virtual-routers/r"), check=_child("r", "virtualRouter/r")),
    E("ListRoutes", "GET", _p("/meshes/{M}/virtual-routers/r/routes/"), check=_listed("name", "rt"), grow=_grow_resources(ROUTE, "r")),
    E("GetRoute", "GET", _p("/meshes/{M}/virtual-routers/r/routes/rt"), check=lambda w, b: _child("rt", "virtualRouter/r/route/rt")(w, b) or _field("virtualRouterName", "r")(w, b)),
    E("ListVirtualGateways", "GET", _p("/meshes/{M}/virtual-gateways/"), check=_listed("name", "g"), grow=_grow_resources(VIRTUAL_GATEWAY)),
    E("GetVirtualGateway", "GET", _p("/meshes/{M}/virtual-gateways/g"), check=_child("g", "virtualGateway/g")),
    E("ListGatewayRoutes", "GET", _p("/meshes/{M}/virtual-gateways/g/gateway-routes/"), check=_listed("name", "gr"), grow=_grow_resources(GATEWAY_ROUTE, "g")),
    E("GetGatewayRoute", "GET", _p("/meshes/{M}/virtual-gateways/g/gateway-routes/gr"), check=lambda w, b: _child("gr", "virtualGateway/g/gatewayRoute/gr")(w, b) or _field("virtualGatewayName", "g")(w, b)),
]  # fmt: skip


# Every native endpoint: this module's, and those held to the contract with a world of
# their own in other modules.
ALL_ENDPOINTS = ENDPOINTS + PIPELINE_ENDPOINTS + IDENTITY_ENDPOINTS + MTLS_ENDPOINTS


def test_every_native_route_is_covered():
    """A new native endpoint cannot be added without a row above."""
    from django.urls import URLPattern, URLResolver, get_resolver

    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                yield prefix + str(p.pattern), p

    routes = {}
    for route, pattern in walk(get_resolver().url_patterns):
        if route.startswith("api/v1/") and "schema" not in route:
            actions = getattr(pattern.callback, "actions", {})
            routes[route] = {m.upper() for m in actions if m != "head"}
    covered = sum(len(methods) for methods in routes.values())
    assert covered == len(ALL_ENDPOINTS), (covered, sorted(routes.items()))


class TestNativeEndpoints(EndpointContract):
    ENDPOINTS = ENDPOINTS

    @pytest.fixture
    def world(self, alice):
        return build_world(alice)

    def test_read_only_key(self, endpoint, world, bob, api_server):
        if endpoint.extra.get("admin_only"):
            # bob is a viewer: managing the tenant is for admins, reading it included.
            response = send(bob, endpoint, endpoint.request(world), api_server.url)
            assert response.status_code == 403, response.text
            assert "admin" in response.json()["detail"], response.text
            return
        super().test_read_only_key(endpoint, world, bob, api_server)
