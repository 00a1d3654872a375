"""The App Mesh API through boto3 against a live server: every resource type's lifecycle,
reference and deletion rules, names, pagination, tags and clientToken idempotency."""

import copy
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from meshapi.models import IdempotencyRecord
from tests.e2e import specs
from tests.e2e.appmesh_helpers import call, client_for, key_of, names_in, raises
from tests.e2e.specs import ACCOUNT, arn


@pytest.fixture
def client(alice):
    return client_for(alice)


@pytest.fixture
def shop(client):
    """Mesh "shop" with nodes orders-blue/-green and router "orders"."""
    client.create_mesh(meshName="shop")
    for name in ("orders-blue", "orders-green"):
        client.create_virtual_node(
            meshName="shop", virtualNodeName=name, spec=specs.node_spec_minimal(hostname=name)
        )
    client.create_virtual_router(
        meshName="shop", virtualRouterName="orders", spec=specs.router_spec()
    )
    return client


def _check_lifecycle(client, op, names, spec, new_spec, expected_arn, list_params):
    """create → describe → update → describe → list → delete → describe (NotFound)."""
    created = call(client, "create", op, spec=spec, **names)
    for field, value in names.items():
        assert created[field] == value
    assert created["spec"] == spec
    assert created["status"] == {"status": "ACTIVE"}
    meta = created["metadata"]
    assert meta["arn"] == expected_arn
    assert meta["meshOwner"] == ACCOUNT
    assert meta["resourceOwner"] == ACCOUNT
    assert meta["version"] == 1
    assert uuid.UUID(meta["uid"])
    assert meta["createdAt"] == meta["lastUpdatedAt"]

    assert call(client, "describe", op, **names) == created

    updated = call(client, "update", op, spec=new_spec, **names)
    assert updated["spec"] == new_spec
    assert updated["metadata"]["version"] == 2
    assert updated["metadata"]["uid"] == meta["uid"]
    assert updated["metadata"]["arn"] == expected_arn
    assert updated["metadata"]["createdAt"] == meta["createdAt"]
    assert updated["metadata"]["lastUpdatedAt"] >= meta["lastUpdatedAt"]
    assert call(client, "describe", op, **names) == updated

    plural = "Meshes" if op == "Mesh" else op + "s"
    refs = call(client, "list", plural, **list_params)
    [ref] = [r for r in refs if r["arn"] == expected_arn]
    assert ref == {
        **names,
        "arn": expected_arn,
        "createdAt": meta["createdAt"],
        "lastUpdatedAt": updated["metadata"]["lastUpdatedAt"],
        "meshOwner": ACCOUNT,
        "resourceOwner": ACCOUNT,
        "version": 2,
    }

    deleted = call(client, "delete", op, **names)
    assert deleted["status"] == {"status": "DELETED"}
    assert deleted["spec"] == new_spec
    assert deleted["metadata"]["arn"] == expected_arn
    with raises("NotFoundException", names.get(key_of(op) + "Name", names["meshName"])):
        call(client, "describe", op, **names)
    assert expected_arn not in [r["arn"] for r in call(client, "list", plural, **list_params)]


# ---------------------------------------------------------------- lifecycles


def test_mesh_lifecycle(client):
    _check_lifecycle(
        client,
        "Mesh",
        {"meshName": "shop"},
        specs.mesh_spec(),
        {"egressFilter": {"type": "DROP_ALL"}, "serviceDiscovery": {"ipPreference": "IPv6_ONLY"}},
        arn("mesh/shop"),
        {},
    )
    # Without a spec a mesh drops egress to unknown destinations, as App Mesh's did.
    mesh = client.create_mesh(meshName="plain")["mesh"]
    assert mesh["spec"] == {"egressFilter": {"type": "DROP_ALL"}}
    assert client.describe_mesh(meshName="plain")["mesh"]["spec"] == mesh["spec"]


def test_virtual_node_lifecycle_every_protocol_tls_and_discovery(client):
    client.create_mesh(meshName="shop")
    _check_lifecycle(
        client,
        "VirtualNode",
        {"meshName": "shop", "virtualNodeName": "orders-v1"},
        specs.node_spec_dns(),
        specs.node_spec_cloud_map(),
        arn("mesh/shop/virtualNode/orders-v1"),
        {"meshName": "shop"},
    )


def _reweighted(spec: dict) -> dict:
    """The same route with its weights reversed and a new priority."""
    spec = copy.deepcopy(spec)
    route_type = next(k for k in spec if k.endswith("Route"))
    targets = spec[route_type]["action"]["weightedTargets"]
    weights = [t["weight"] for t in targets]
    for target, weight in zip(targets, reversed(weights), strict=True):
        target["weight"] = weight
    spec["priority"] = 999
    return spec


ROUTE_CASES = {
    "http-headers": (specs.http_route_headers(), specs.http_route_path_exact("orders-green")),
    "http-path-exact": (specs.http_route_path_exact(), _reweighted(specs.http_route_headers())),
    "http2-path-regex": (
        specs.http2_route_path_regex(),
        _reweighted(specs.http2_route_path_regex()),
    ),
    "grpc": (specs.grpc_route(), _reweighted(specs.grpc_route())),
    "tcp": (specs.tcp_route(), specs.tcp_route("orders-green")),
}


def test_virtual_router_and_every_route_type_lifecycle(shop):
    _check_lifecycle(
        shop,
        "VirtualRouter",
        {"meshName": "shop", "virtualRouterName": "payments"},
        specs.router_spec(),
        {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]},
        arn("mesh/shop/virtualRouter/payments"),
        {"meshName": "shop"},
    )
    for case, (spec, new_spec) in ROUTE_CASES.items():
        _check_lifecycle(
            shop,
            "Route",
            {"meshName": "shop", "virtualRouterName": "orders", "routeName": case},
            spec,
            new_spec,
            arn(f"mesh/shop/virtualRouter/orders/route/{case}"),
            {"meshName": "shop", "virtualRouterName": "orders"},
        )


def test_virtual_service_lifecycle_moves_provider_from_node_to_router(shop):
    _check_lifecycle(
        shop,
        "VirtualService",
        {"meshName": "shop", "virtualServiceName": "orders.shop.local"},
        {"provider": {"virtualNode": {"virtualNodeName": "orders-blue"}}},
        {"provider": {"virtualRouter": {"virtualRouterName": "orders"}}},
        arn("mesh/shop/virtualService/orders.shop.local"),
        {"meshName": "shop"},
    )
    service = shop.create_virtual_service(
        meshName="shop", virtualServiceName="external.example.com", spec={}
    )["virtualService"]
    assert service["spec"] == {}
    assert service["metadata"]["arn"] == arn("mesh/shop/virtualService/external.example.com")


GATEWAY_ROUTE_CASES = {
    "http-hostname-prefix-rewrite": (
        specs.gateway_route_http(),
        specs.gateway_route_http_default_prefix(),
    ),
    "http2-path-rewrite": (
        specs.gateway_route_http2_path(),
        specs.gateway_route_http2_path("payments"),
    ),
    "grpc": (specs.gateway_route_grpc(), specs.gateway_route_grpc("payments")),
}


def test_virtual_gateway_and_every_gateway_route_type_lifecycle(client):
    client.create_mesh(meshName="shop")
    _check_lifecycle(
        client,
        "VirtualGateway",
        {"meshName": "shop", "virtualGatewayName": "partners"},
        specs.gateway_spec(),
        {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
        arn("mesh/shop/virtualGateway/partners"),
        {"meshName": "shop"},
    )
    client.create_virtual_gateway(
        meshName="shop", virtualGatewayName="edge", spec=specs.gateway_spec()
    )
    for service in ("orders.shop.local", "payments"):
        client.create_virtual_service(meshName="shop", virtualServiceName=service, spec={})
    for case, (spec, new_spec) in GATEWAY_ROUTE_CASES.items():
        _check_lifecycle(
            client,
            "GatewayRoute",
            {"meshName": "shop", "virtualGatewayName": "edge", "gatewayRouteName": case},
            spec,
            new_spec,
            arn(f"mesh/shop/virtualGateway/edge/gatewayRoute/{case}"),
            {"meshName": "shop", "virtualGatewayName": "edge"},
        )


# ---------------------------------------------------------------- references


def test_references_must_exist_when_written(shop):
    with raises("NotFoundException", "spec.provider.virtualNode.virtualNodeName", "'ghost'"):
        shop.create_virtual_service(
            meshName="shop",
            virtualServiceName="orders.shop.local",
            spec={"provider": {"virtualNode": {"virtualNodeName": "ghost"}}},
        )
    with raises("NotFoundException", "spec.provider.virtualRouter.virtualRouterName", "'ghost'"):
        shop.create_virtual_service(
            meshName="shop",
            virtualServiceName="orders.shop.local",
            spec={"provider": {"virtualRouter": {"virtualRouterName": "ghost"}}},
        )
    assert shop.list_virtual_services(meshName="shop")["virtualServices"] == []

    spec = {"provider": {"virtualNode": {"virtualNodeName": "orders-blue"}}}
    shop.create_virtual_service(meshName="shop", virtualServiceName="orders", spec=spec)
    with raises("NotFoundException", "spec.provider.virtualRouter.virtualRouterName"):
        shop.update_virtual_service(
            meshName="shop",
            virtualServiceName="orders",
            spec={"provider": {"virtualRouter": {"virtualRouterName": "ghost"}}},
        )
    service = shop.describe_virtual_service(meshName="shop", virtualServiceName="orders")
    assert service["virtualService"]["spec"] == spec
    assert service["virtualService"]["metadata"]["version"] == 1

    route = specs.http_route_headers(green="ghost")
    with raises(
        "NotFoundException", "spec.httpRoute.action.weightedTargets[1].virtualNode", "ghost"
    ):
        shop.create_route(meshName="shop", virtualRouterName="orders", routeName="r", spec=route)
    assert shop.list_routes(meshName="shop", virtualRouterName="orders")["routes"] == []

    shop.create_virtual_gateway(
        meshName="shop", virtualGatewayName="edge", spec=specs.gateway_spec()
    )
    field = "spec.grpcRoute.action.target.virtualService.virtualServiceName"
    with raises("NotFoundException", field, "'ghost'"):
        shop.create_gateway_route(
            meshName="shop",
            virtualGatewayName="edge",
            gatewayRouteName="web",
            spec=specs.gateway_route_grpc("ghost"),
        )
    gateway_routes = shop.list_gateway_routes(meshName="shop", virtualGatewayName="edge")
    assert gateway_routes["gatewayRoutes"] == []


def test_parents_must_exist(shop):
    with raises("NotFoundException", "Mesh 'nowhere'"):
        shop.create_virtual_node(
            meshName="nowhere", virtualNodeName="n", spec=specs.node_spec_minimal()
        )
    with raises("NotFoundException", "Virtual router 'ghost'"):
        shop.create_route(
            meshName="shop", virtualRouterName="ghost", routeName="r", spec=specs.tcp_route()
        )
    with raises("NotFoundException", "Mesh 'nowhere'"):
        shop.list_virtual_nodes(meshName="nowhere")
    with raises("NotFoundException", "Virtual gateway 'ghost'"):
        shop.list_gateway_routes(meshName="shop", virtualGatewayName="ghost")
    with raises("NotFoundException", "Virtual router 'ghost'"):
        shop.describe_route(meshName="shop", virtualRouterName="ghost", routeName="r")


# ---------------------------------------------------------------- deletion rules


def test_a_mesh_with_resources_cannot_be_deleted(shop):
    with raises("ResourceInUseException", "shop"):
        shop.delete_mesh(meshName="shop")
    assert shop.describe_mesh(meshName="shop")["mesh"]["status"] == {"status": "ACTIVE"}
    shop.delete_virtual_router(meshName="shop", virtualRouterName="orders")
    for name in ("orders-blue", "orders-green"):
        shop.delete_virtual_node(meshName="shop", virtualNodeName=name)
    assert shop.delete_mesh(meshName="shop")["mesh"]["status"] == {"status": "DELETED"}
    assert shop.list_meshes()["meshes"] == []

    shop.create_mesh(meshName="edge")
    shop.create_virtual_gateway(meshName="edge", virtualGatewayName="gw", spec=specs.gateway_spec())
    with raises("ResourceInUseException", "virtual gateways"):
        shop.delete_mesh(meshName="edge")


def test_routers_and_nodes_in_use_cannot_be_deleted(shop):
    shop.create_route(
        meshName="shop", virtualRouterName="orders", routeName="db", spec=specs.tcp_route()
    )
    with raises("ResourceInUseException", "routes"):
        shop.delete_virtual_router(meshName="shop", virtualRouterName="orders")
    shop.delete_route(meshName="shop", virtualRouterName="orders", routeName="db")

    shop.create_virtual_service(
        meshName="shop",
        virtualServiceName="orders.shop.local",
        spec={"provider": {"virtualRouter": {"virtualRouterName": "orders"}}},
    )
    shop.create_virtual_service(
        meshName="shop",
        virtualServiceName="blue.shop.local",
        spec={"provider": {"virtualNode": {"virtualNodeName": "orders-blue"}}},
    )
    with raises("ResourceInUseException", "orders.shop.local"):
        shop.delete_virtual_router(meshName="shop", virtualRouterName="orders")
    with raises("ResourceInUseException", "blue.shop.local"):
        shop.delete_virtual_node(meshName="shop", virtualNodeName="orders-blue")
    assert shop.describe_virtual_node(meshName="shop", virtualNodeName="orders-blue")

    # Once the service names another provider, the node may go; so may an unused router.
    shop.update_virtual_service(
        meshName="shop",
        virtualServiceName="blue.shop.local",
        spec={"provider": {"virtualNode": {"virtualNodeName": "orders-green"}}},
    )
    shop.delete_virtual_node(meshName="shop", virtualNodeName="orders-blue")
    with raises("ResourceInUseException", "blue.shop.local"):
        shop.delete_virtual_node(meshName="shop", virtualNodeName="orders-green")
    shop.delete_virtual_service(meshName="shop", virtualServiceName="orders.shop.local")
    shop.delete_virtual_router(meshName="shop", virtualRouterName="orders")
    assert shop.list_virtual_routers(meshName="shop")["virtualRouters"] == []


def test_gateways_and_targeted_services_cannot_be_deleted(client):
    client.create_mesh(meshName="shop")
    client.create_virtual_gateway(
        meshName="shop", virtualGatewayName="edge", spec=specs.gateway_spec()
    )
    for service in ("orders.shop.local", "payments"):
        client.create_virtual_service(meshName="shop", virtualServiceName=service, spec={})
    client.create_gateway_route(
        meshName="shop",
        virtualGatewayName="edge",
        gatewayRouteName="web",
        spec=specs.gateway_route_http(),
    )
    with raises("ResourceInUseException", "gateway routes"):
        client.delete_virtual_gateway(meshName="shop", virtualGatewayName="edge")
    with raises("ResourceInUseException", "gateway route 'web'"):
        client.delete_virtual_service(meshName="shop", virtualServiceName="orders.shop.local")

    # Retargeted, the gateway route releases the old service and holds the new one.
    client.update_gateway_route(
        meshName="shop",
        virtualGatewayName="edge",
        gatewayRouteName="web",
        spec=specs.gateway_route_grpc("payments"),
    )
    client.delete_virtual_service(meshName="shop", virtualServiceName="orders.shop.local")
    with raises("ResourceInUseException", "gateway route 'web'"):
        client.delete_virtual_service(meshName="shop", virtualServiceName="payments")

    client.delete_gateway_route(meshName="shop", virtualGatewayName="edge", gatewayRouteName="web")
    client.delete_virtual_service(meshName="shop", virtualServiceName="payments")
    client.delete_virtual_gateway(meshName="shop", virtualGatewayName="edge")
    assert client.delete_mesh(meshName="shop")["mesh"]["status"] == {"status": "DELETED"}


def test_a_routes_target_node_may_be_deleted_later(shop):
    spec = specs.http_route_headers()
    shop.create_route(meshName="shop", virtualRouterName="orders", routeName="r", spec=spec)
    deleted = shop.delete_virtual_node(meshName="shop", virtualNodeName="orders-green")
    assert deleted["virtualNode"]["status"] == {"status": "DELETED"}
    route = shop.describe_route(meshName="shop", virtualRouterName="orders", routeName="r")["route"]
    assert route["spec"] == spec
    assert route["status"] == {"status": "ACTIVE"}


# ---------------------------------------------------------------- names


def test_names_are_unique_per_mesh_and_type(shop, charlie):
    with raises("ConflictException", "orders-blue"):
        shop.create_virtual_node(
            meshName="shop", virtualNodeName="orders-blue", spec=specs.node_spec_minimal(9000)
        )
    node = shop.describe_virtual_node(meshName="shop", virtualNodeName="orders-blue")
    assert node["virtualNode"]["spec"] == specs.node_spec_minimal(hostname="orders-blue")
    with raises("ConflictException", "shop"):
        shop.create_mesh(meshName="shop")

    # Another type, another mesh, another router, another tenant: all free to reuse a name.
    shop.create_virtual_service(meshName="shop", virtualServiceName="orders-blue", spec={})
    shop.create_virtual_gateway(
        meshName="shop", virtualGatewayName="orders-blue", spec=specs.gateway_spec()
    )
    shop.create_mesh(meshName="staging")
    shop.create_virtual_node(
        meshName="staging", virtualNodeName="orders-blue", spec=specs.node_spec_minimal()
    )
    shop.create_virtual_router(meshName="shop", virtualRouterName="payments", spec={})
    for router in ("orders", "payments"):
        shop.create_route(
            meshName="shop", virtualRouterName=router, routeName="default", spec=specs.tcp_route()
        )
    with raises("ConflictException", "default"):
        shop.create_route(
            meshName="shop", virtualRouterName="orders", routeName="default", spec=specs.tcp_route()
        )

    theirs = client_for(charlie)
    mesh = theirs.create_mesh(meshName="shop")["mesh"]
    assert mesh["metadata"]["arn"] == "arn:aws:appmesh:us-east-1:222222222222:mesh/shop"
    assert mesh["metadata"]["meshOwner"] == "222222222222"
    theirs.create_virtual_node(
        meshName="shop", virtualNodeName="orders-blue", spec=specs.node_spec_minimal()
    )
    assert names_in(shop.list_meshes()["meshes"], "meshName") == ["shop", "staging"]


# ---------------------------------------------------------------- pagination


def _pages(method, key: str, field: str, **params) -> list[list[str]]:
    pages, token = [], None
    while True:
        response = method(**params, **({"nextToken": token} if token else {}))
        pages.append(names_in(response[key], field))
        token = response.get("nextToken")
        if not token:
            return pages


def test_meshes_paginate_and_bad_tokens_are_refused(client):
    names = [f"mesh-{i}" for i in range(5)]
    for name in names:
        client.create_mesh(meshName=name)
    pages = _pages(client.list_meshes, "meshes", "meshName", limit=2)
    assert pages == [names[0:2], names[2:4], names[4:]]
    paginator = client.get_paginator("list_meshes")
    found = [
        m["meshName"]
        for page in paginator.paginate(PaginationConfig={"PageSize": 3})
        for m in page["meshes"]
    ]
    assert found == names
    assert names_in(client.list_meshes()["meshes"], "meshName") == names
    # A page that ends exactly at the last mesh carries no token.
    last = client.list_meshes(limit=2, nextToken=client.list_meshes(limit=3)["nextToken"])
    assert names_in(last["meshes"], "meshName") == names[3:]
    assert "nextToken" not in last

    with raises("BadRequestException", "nextToken"):
        client.list_meshes(nextToken="not-a-token")
    with raises("BadRequestException", "nextToken"):
        client.list_virtual_nodes(meshName="mesh-0", nextToken="eyJhZnRlciI6IDF9")  # {"after": 1}
    with raises("BadRequestException", "limit"):
        client.list_meshes(limit=101)
    with raises("BadRequestException", "limit"):
        client.list_tags_for_resource(resourceArn=arn("mesh/mesh-0"), limit=51)


def test_virtual_nodes_and_routes_paginate(shop):
    names = [f"node-{i:02d}" for i in range(7)]
    for name in names:
        shop.create_virtual_node(
            meshName="shop", virtualNodeName=name, spec=specs.node_spec_minimal()
        )
    everything = sorted(names + ["orders-blue", "orders-green"])
    pages = _pages(
        shop.list_virtual_nodes, "virtualNodes", "virtualNodeName", meshName="shop", limit=4
    )
    assert pages == [everything[0:4], everything[4:8], everything[8:]]
    paginator = shop.get_paginator("list_virtual_nodes")
    result = paginator.paginate(
        meshName="shop", PaginationConfig={"PageSize": 2}
    ).build_full_result()
    assert names_in(result["virtualNodes"], "virtualNodeName") == everything

    routes = [f"route-{i}" for i in range(5)]
    for name in routes:
        shop.create_route(
            meshName="shop", virtualRouterName="orders", routeName=name, spec=specs.tcp_route()
        )
    pages = _pages(
        shop.list_routes,
        "routes",
        "routeName",
        meshName="shop",
        virtualRouterName="orders",
        limit=2,
    )
    assert pages == [routes[0:2], routes[2:4], routes[4:]]
    paginator = shop.get_paginator("list_routes")
    result = paginator.paginate(
        meshName="shop", virtualRouterName="orders", PaginationConfig={"PageSize": 3}
    ).build_full_result()
    assert names_in(result["routes"], "routeName") == routes


# ---------------------------------------------------------------- tags


def test_tags_add_replace_remove_and_paginate(client):
    mesh_arn = client.create_mesh(
        meshName="shop", tags=[{"key": "team", "value": "checkout"}, {"key": "env", "value": "dev"}]
    )["mesh"]["metadata"]["arn"]
    assert client.list_tags_for_resource(resourceArn=mesh_arn)["tags"] == [
        {"key": "env", "value": "dev"},
        {"key": "team", "value": "checkout"},
    ]
    client.tag_resource(
        resourceArn=mesh_arn,
        tags=[{"key": "env", "value": "prod"}, {"key": "cost-center", "value": "42"}],
    )
    client.untag_resource(resourceArn=mesh_arn, tagKeys=["team", "not-there"])
    assert client.list_tags_for_resource(resourceArn=mesh_arn)["tags"] == [
        {"key": "cost-center", "value": "42"},
        {"key": "env", "value": "prod"},
    ]

    client.tag_resource(
        resourceArn=mesh_arn, tags=[{"key": f"k{i:02d}", "value": str(i)} for i in range(10)]
    )
    pages = _pages(client.list_tags_for_resource, "tags", "key", resourceArn=mesh_arn, limit=5)
    assert [len(p) for p in pages] == [5, 5, 2]
    assert sum(pages, []) == ["cost-center", "env"] + [f"k{i:02d}" for i in range(10)]
    paginator = client.get_paginator("list_tags_for_resource")
    result = paginator.paginate(resourceArn=mesh_arn, PaginationConfig={"PageSize": 4})
    assert len(result.build_full_result()["tags"]) == 12


def test_child_resources_are_tagged_by_arn(shop):
    route = shop.create_route(
        meshName="shop",
        virtualRouterName="orders",
        routeName="db",
        spec=specs.tcp_route(),
        tags=[{"key": "owner", "value": "dba"}],
    )["route"]
    route_arn = route["metadata"]["arn"]
    assert route_arn == arn("mesh/shop/virtualRouter/orders/route/db")
    node_arn = arn("mesh/shop/virtualNode/orders-blue")
    shop.tag_resource(resourceArn=node_arn, tags=[{"key": "tier", "value": "gold"}])
    assert shop.list_tags_for_resource(resourceArn=node_arn)["tags"] == [
        {"key": "tier", "value": "gold"}
    ]
    assert shop.list_tags_for_resource(resourceArn=route_arn)["tags"] == [
        {"key": "owner", "value": "dba"}
    ]
    # Tags go with the resource: a new node of the same name starts untagged.
    shop.delete_virtual_node(meshName="shop", virtualNodeName="orders-blue")
    with raises("NotFoundException"):
        shop.list_tags_for_resource(resourceArn=node_arn)
    shop.create_virtual_node(
        meshName="shop", virtualNodeName="orders-blue", spec=specs.node_spec_minimal()
    )
    assert shop.list_tags_for_resource(resourceArn=node_arn)["tags"] == []


def test_too_many_tags_and_unknown_arns(client):
    fifty = [{"key": f"k{i:02d}", "value": "v"} for i in range(50)]
    mesh_arn = client.create_mesh(meshName="shop", tags=fifty)["mesh"]["metadata"]["arn"]
    with raises("TooManyTagsException", "50"):
        client.tag_resource(resourceArn=mesh_arn, tags=[{"key": "one-more", "value": "v"}])
    tags = client.list_tags_for_resource(resourceArn=mesh_arn, limit=50)
    assert tags["tags"] == fifty
    assert "nextToken" not in tags
    # Replacing a value of an existing key stays within the limit.
    client.tag_resource(resourceArn=mesh_arn, tags=[{"key": "k00", "value": "new"}])
    assert client.list_tags_for_resource(resourceArn=mesh_arn, limit=1)["tags"] == [
        {"key": "k00", "value": "new"}
    ]

    with raises("NotFoundException", "elsewhere"):
        client.tag_resource(resourceArn=arn("mesh/elsewhere"), tags=[{"key": "a", "value": "b"}])
    with raises("BadRequestException", "resourceArn"):
        client.list_tags_for_resource(resourceArn="arn:aws:s3:::bucket")
    with raises("BadRequestException", "resourceArn"):
        client.untag_resource(resourceArn=arn("mesh/shop/virtualThing/x"), tagKeys=["a"])
    with raises("NotFoundException"):
        client.list_tags_for_resource(
            resourceArn=arn("mesh/shop").replace("us-east-1", "eu-west-1")
        )


# ---------------------------------------------------------------- idempotency


def test_create_with_the_same_client_token_creates_once(client):
    first = client.create_mesh(meshName="shop", spec=specs.mesh_spec(), clientToken="create-shop-1")
    again = client.create_mesh(meshName="shop", spec=specs.mesh_spec(), clientToken="create-shop-1")
    assert again["mesh"] == first["mesh"]
    assert names_in(client.list_meshes()["meshes"], "meshName") == ["shop"]

    with raises("ConflictException", "clientToken"):
        client.create_mesh(meshName="shop", clientToken="create-shop-1")
    assert client.describe_mesh(meshName="shop")["mesh"]["spec"] == specs.mesh_spec()

    spec = specs.node_spec_dns()
    node = client.create_virtual_node(
        meshName="shop", virtualNodeName="orders", spec=spec, clientToken="node-orders"
    )["virtualNode"]
    again = client.create_virtual_node(
        meshName="shop", virtualNodeName="orders", spec=spec, clientToken="node-orders"
    )["virtualNode"]
    assert again["metadata"]["uid"] == node["metadata"]["uid"]
    assert again == node
    with raises("ConflictException", "clientToken"):
        client.create_virtual_node(
            meshName="shop",
            virtualNodeName="orders",
            spec=specs.node_spec_minimal(),
            clientToken="node-orders",
        )
    nodes = client.list_virtual_nodes(meshName="shop")["virtualNodes"]
    assert [(n["virtualNodeName"], n["version"]) for n in nodes] == [("orders", 1)]
    # Without a token, a second create of the same name is a conflict, not a replay.
    with raises("ConflictException", "orders"):
        client.create_virtual_node(meshName="shop", virtualNodeName="orders", spec=spec)

    # A token is a UUID-sized word, as the model documents.
    for token in ("t" * 37, "has space", "semi;colon"):
        with raises("BadRequestException", "clientToken"):
            client.create_mesh(meshName="other", clientToken=token)
    assert names_in(client.list_meshes()["meshes"], "meshName") == ["shop"]


def _age_client_tokens(hours: int) -> None:
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=hours))


def test_update_with_the_same_client_token_updates_once(shop):
    spec = specs.node_spec_cloud_map()
    first = shop.update_virtual_node(
        meshName="shop", virtualNodeName="orders-blue", spec=spec, clientToken="deploy-42"
    )["virtualNode"]
    again = shop.update_virtual_node(
        meshName="shop", virtualNodeName="orders-blue", spec=spec, clientToken="deploy-42"
    )["virtualNode"]
    assert first["metadata"]["version"] == again["metadata"]["version"] == 2
    assert again == first
    with raises("ConflictException", "clientToken"):
        shop.update_virtual_node(
            meshName="shop",
            virtualNodeName="orders-blue",
            spec=specs.node_spec_minimal(),
            clientToken="deploy-42",
        )
    node = shop.describe_virtual_node(meshName="shop", virtualNodeName="orders-blue")
    assert node["virtualNode"]["metadata"]["version"] == 2
    assert node["virtualNode"]["spec"] == spec
    # A fresh token is a fresh update.
    third = shop.update_virtual_node(
        meshName="shop", virtualNodeName="orders-blue", spec=spec, clientToken="deploy-43"
    )
    assert third["virtualNode"]["metadata"]["version"] == 3

    # A day later a token is forgotten: reused, it starts a new update instead of replaying.
    _age_client_tokens(25)
    fourth = shop.update_virtual_node(
        meshName="shop",
        virtualNodeName="orders-blue",
        spec=specs.node_spec_minimal(),
        clientToken="deploy-42",
    )["virtualNode"]
    assert fourth["metadata"]["version"] == 4
    assert fourth["spec"] == specs.node_spec_minimal()
    again = shop.update_virtual_node(
        meshName="shop",
        virtualNodeName="orders-blue",
        spec=specs.node_spec_minimal(),
        clientToken="deploy-42",
    )["virtualNode"]
    assert again == fourth

    shop.create_virtual_node(
        meshName="shop", virtualNodeName="a", spec=specs.node_spec_minimal(), clientToken="new-a"
    )
    _age_client_tokens(25)
    created = shop.create_virtual_node(
        meshName="shop", virtualNodeName="b", spec=specs.node_spec_minimal(), clientToken="new-a"
    )["virtualNode"]
    assert created["virtualNodeName"] == "b"
    assert created["metadata"]["version"] == 1
