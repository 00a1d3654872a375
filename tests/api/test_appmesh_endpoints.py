"""Every one of the 38 App Mesh operations held to the endpoint contract."""

from urllib.parse import quote

import pytest

from meshapi.appmesh.model import operations
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
from tests.support.endpoints import Call, Endpoint, EndpointContract

P = "/v20190125"
M = "alicemesh"
HTTP_LISTENER = [{"portMapping": {"port": 8080, "protocol": "http"}}]
NODE_SPEC = {"listeners": HTTP_LISTENER, "serviceDiscovery": {"dns": {"hostname": "n.local"}}}
ROUTE_SPEC = {
    "httpRoute": {
        "match": {"prefix": "/"},
        "action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]},
    }
}
GW_SPEC = {"listeners": HTTP_LISTENER}
GW_ROUTE_SPEC = {
    "httpRoute": {
        "match": {"prefix": "/"},
        "action": {"target": {"virtualService": {"virtualServiceName": "s.local"}}},
    }
}
SERVICE_SPEC = {"provider": {"virtualNode": {"virtualNodeName": "n"}}}


def _create(tenant, kind, name, spec, parent=""):
    writer = resources.Writer(actor="test")
    return resources.create(
        tenant, kind, writer, mesh_name=M, name=name, spec=spec, parent_name=parent
    )


def build_world(alice) -> dict:
    t = alice.tenant
    _create(t, MESH, M, {})
    for name in ("n", "n2"):
        _create(t, VIRTUAL_NODE, name, NODE_SPEC)
    _create(t, VIRTUAL_ROUTER, "r", {"listeners": HTTP_LISTENER})
    _create(t, VIRTUAL_ROUTER, "r2", {"listeners": HTTP_LISTENER})
    _create(t, ROUTE, "rt", ROUTE_SPEC, parent="r")
    _create(t, VIRTUAL_SERVICE, "s.local", SERVICE_SPEC)
    _create(t, VIRTUAL_SERVICE, "s2.local", {})
    _create(t, VIRTUAL_GATEWAY, "g", GW_SPEC)
    _create(t, VIRTUAL_GATEWAY, "g2", GW_SPEC)
    _create(t, GATEWAY_ROUTE, "gr", GW_ROUTE_SPEC, parent="g")
    arn = f"arn:aws:appmesh:us-east-1:{t.account_id}:mesh/{M}/virtualNode/n"
    return {"arn": arn, "alice_marker": M}


def _grow(kind, parent=""):
    def grow(alice, world):
        spec = {
            MESH: {},
            VIRTUAL_NODE: NODE_SPEC,
            VIRTUAL_SERVICE: {},
            VIRTUAL_ROUTER: {"listeners": HTTP_LISTENER},
            ROUTE: ROUTE_SPEC,
            VIRTUAL_GATEWAY: GW_SPEC,
            GATEWAY_ROUTE: GW_ROUTE_SPEC,
        }[kind]
        for i in range(10):
            name = f"grown{i}"
            if kind is MESH:
                resources.create(
                    alice.tenant, MESH, resources.Writer("t"), mesh_name=name, name=name, spec={}
                )
            else:
                _create(alice.tenant, kind, name, spec, parent)

    return grow


def _tags_grow(alice, world):
    resources.tag(
        alice.tenant,
        resources.Writer("t"),
        world["arn"],
        [{"key": f"k{i}", "value": "v"} for i in range(15)],
    )


def _expect(key, name):
    def check(world, body):
        assert body[key] == name, body

    return check


def _status(value):
    def check(world, body):
        assert body["status"]["status"] == value, body

    return check


def _listed(key, name):
    def check(world, body):
        assert name in [item[key] for item in body[next(k for k in body if k != "nextToken")]]

    return check


ENDPOINTS = [
    # meshes
    Endpoint("CreateMesh", "appmesh", True, lambda w: Call("PUT", f"{P}/meshes", {"meshName": "new"}),
             check=_expect("meshName", "new"), other_tenant="skip"),
    Endpoint("DescribeMesh", "appmesh", False, lambda w: Call("GET", f"{P}/meshes/{M}"),
             check=_expect("meshName", M)),
    Endpoint("UpdateMesh", "appmesh", True,
             lambda w: Call("PUT", f"{P}/meshes/{M}", {"spec": {"egressFilter": {"type": "ALLOW_ALL"}}}),
             check=lambda w, b: b["metadata"]["version"] == 2 or pytest.fail(b)),
    Endpoint("DeleteMesh", "appmesh", True, lambda w: Call("DELETE", f"{P}/meshes/{M}"),
             ok_status=409),  # the world mesh has resources: ResourceInUse for alice
    Endpoint("ListMeshes", "appmesh", False, lambda w: Call("GET", f"{P}/meshes"),
             check=_listed("meshName", M), other_tenant="empty-list", grow=_grow(MESH)),
    # virtual nodes
    Endpoint("CreateVirtualNode", "appmesh", True,
             lambda w: Call("PUT", f"{P}/meshes/{M}/virtualNodes", {"virtualNodeName": "new", "spec": NODE_SPEC}),
             check=_expect("virtualNodeName", "new")),
    Endpoint("DescribeVirtualNode", "appmesh", False,
             lambda w: Call("GET", f"{P}/meshes/{M}/virtualNodes/n"), check=_expect("virtualNodeName", "n")),
    Endpoint("UpdateVirtualNode", "appmesh", True,
             lambda w: Call("PUT", f"{P}/meshes/{M}/virtualNodes/n", {"spec": NODE_SPEC}),
             check=_expect("virtualNodeName", "n")),
    Endpoint("DeleteVirtualNode", "appmesh", True,
             lambda w: Call("DELETE", f"{P}/meshes/{M}/virtualNodes/n2"), check=_status("DELETED")),
    Endpoint("ListVirtualNodes", "appmesh", False, lambda w: Call("GET", f"{P}/meshes/{M}/virtualNodes"),
             check=_listed("virtualNodeName", "n"), grow=_grow(VIRTUAL_NODE)),
    # virtual services
    Endpoint("CreateVirtualService", "appmesh", True,
             lambda w: Call("PUT", f"{P}/meshes/{M}/virtualServices", {"virtualServiceName": "new.local", "spec": SERVICE_SPEC}),
             check=_expect("virtualServiceName", "new.local")),
    Endpoint("DescribeVirtualService", "appmesh", False,
             lambda w: Call("GET", f"{P}/meshes/{M}/virtualServices/s.local"),
             check=_expect("virtualServiceName", "s.local")),
    Endpoint("UpdateVirtualService", "appmesh", True,
             lambda w: Call("PUT", f"{P}/meshes/{M}/virtualServices/s.local", {"spec": SERVICE_SPEC}),
             check=_expect("virtualServiceName", "s.local")),
    Endpoint("DeleteVirtualService", "appmesh", True,
             lambda w: Call("DELETE", f"{P}/meshes/{M}/virtualServices/s2.local"), check=_status("DELETED")),
    Endpoint("ListVirtualServices", "appmesh", False, lambda w: Call("GET", f"{P}/meshes/{M}/virtualServices"),
             check=_listed("virtualServiceName", "s.local"), grow=_grow(VIRTUAL_SERVICE)),
    # virtual routers
    Endpoint("CreateVirtualRouter", "appmesh", True,
             lambda w: Call("PUT", f"{P}/meshes/{M}/virtualRouters", {"virtualRouterName": "new", "spec": {"listeners": HTTP_LISTENER}}),
             check=_expect("virtualRouterName", "new")),
    Endpoint("DescribeVirtualRouter", "appmesh", False,
             lambda w: Call("GET", f"{P}/meshes/{M}/virtualRouters/r"), check=_expect("virtualRouterName", "r")),
    Endpoint("UpdateVirtualRouter", "appmesh", True,
             lambda w: Call("PUT", f"{P}/meshes/{M}/virtualRouters/r", {"spec": {"listeners": HTTP_LISTENER}}),
             check=_expect("virtualRouterName", "r")),
    Endpoint("DeleteVirtualRouter", "appmesh", True,
             lambda w: Call("DELETE", f"{P}/meshes/{M}/virtualRouters/r2"), check=_status("DELETED")),
    Endpoint("ListVirtualRouters", "appmesh", False, lambda w: Call("GET", f"{P}/meshes/{M}/virtualRouters"),
             check=_listed("virtualRouterName", "r"), grow=_grow(VIRTUAL_ROUTER)),
    # routes
    Endpoint("CreateRoute", "appmesh", True,
             lambda w: Call("PUT", f"{P}/meshes/{M}/virtualRouter/r/routes", {"routeName": "new", "spec": ROUTE_SPEC}),
             check=_expect("routeName", "new")),
    Endpoint("DescribeRoute", "appmesh", False,
             lambda w: Call("GET", f"{P}/meshes/{M}/virtualRouter/r/routes/rt"), check=_expect("routeName", "rt")),
    Endpoint("UpdateRoute", "appmesh", True,
             lambda w: Call("PUT", f"{P}/meshes/{M}/virtualRouter/r/routes/rt", {"spec": ROUTE_SPEC}),
             check=_expect("routeName", "rt")),
    Endpoint("DeleteRoute", "appmesh", True,
             lambda w: Call("DELETE", f"{P}/meshes/{M}/virtualRouter/r/routes/rt"), check=_status("DELETED")),
    Endpoint("ListRoutes", "appmesh", False, lambda w: Call("GET", f"{P}/meshes/{M}/virtualRouter/r/routes"),
             check=_listed("routeName", "rt"), grow=_grow(ROUTE, "r")),
    # virtual gateways
    Endpoint("CreateVirtualGateway", "appmesh", True,
             lambda w: Call("PUT", f"{P}/meshes/{M}/virtualGateways", {"virtualGatewayName": "new", "spec": GW_SPEC}),
             check=_expect("virtualGatewayName", "new")),
    Endpoint("DescribeVirtualGateway", "appmesh", False,
             lambda w: Call("GET", f"{P}/meshes/{M}/virtualGateways/g"), check=_expect("virtualGatewayName", "g")),
    Endpoint("UpdateVirtualGateway", "appmesh", True,
             lambda w: Call("PUT", f"{P}/meshes/{M}/virtualGateways/g", {"spec": GW_SPEC}),
             check=_expect("virtualGatewayName", "g")),
    Endpoint("DeleteVirtualGateway", "appmesh", True,
             lambda w: Call("DELETE", f"{P}/meshes/{M}/virtualGateways/g2"), check=_status("DELETED")),
    Endpoint("ListVirtualGateways", "appmesh", False, lambda w: Call("GET", f"{P}/meshes/{M}/virtualGateways"),
             check=_listed("virtualGatewayName", "g"), grow=_grow(VIRTUAL_GATEWAY)),
    # gateway routes
    Endpoint("CreateGatewayRoute", "appmesh", True,
             lambda w: Call("PUT", f"{P}/meshes/{M}/virtualGateway/g/gatewayRoutes", {"gatewayRouteName": "new", "spec": GW_ROUTE_SPEC}),
             check=_expect("gatewayRouteName", "new")),
    Endpoint("DescribeGatewayRoute", "appmesh", False,
             lambda w: Call("GET", f"{P}/meshes/{M}/virtualGateway/g/gatewayRoutes/gr"),
             check=_expect("gatewayRouteName", "gr")),
    Endpoint("UpdateGatewayRoute", "appmesh", True,
             lambda w: Call("PUT", f"{P}/meshes/{M}/virtualGateway/g/gatewayRoutes/gr", {"spec": GW_ROUTE_SPEC}),
             check=_expect("gatewayRouteName", "gr")),
    Endpoint("DeleteGatewayRoute", "appmesh", True,
             lambda w: Call("DELETE", f"{P}/meshes/{M}/virtualGateway/g/gatewayRoutes/gr"), check=_status("DELETED")),
    Endpoint("ListGatewayRoutes", "appmesh", False,
             lambda w: Call("GET", f"{P}/meshes/{M}/virtualGateway/g/gatewayRoutes"),
             check=_listed("gatewayRouteName", "gr"), grow=_grow(GATEWAY_ROUTE, "g")),
    # tags
    Endpoint("TagResource", "appmesh", True,
             lambda w: Call("PUT", f"{P}/tag?resourceArn={quote(w['arn'], safe='')}", {"tags": [{"key": "team", "value": "cart"}]})),
    Endpoint("UntagResource", "appmesh", True,
             lambda w: Call("PUT", f"{P}/untag?resourceArn={quote(w['arn'], safe='')}", {"tagKeys": ["team"]})),
    Endpoint("ListTagsForResource", "appmesh", False,
             lambda w: Call("GET", f"{P}/tags?resourceArn={quote(w['arn'], safe='')}"),
             check=lambda w, b: isinstance(b["tags"], list) or pytest.fail(b), grow=_tags_grow),
]  # fmt: skip


def test_every_operation_is_covered():
    assert {e.id for e in ENDPOINTS} == {op.name for op in operations()}


class TestAppMeshEndpoints(EndpointContract):
    ENDPOINTS = ENDPOINTS

    @pytest.fixture
    def world(self, alice):
        return build_world(alice)
