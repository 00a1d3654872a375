"""Concurrent writers against the live server: updates serialize without losing one,
one create of a name wins, client-token retries replay, and writes never deadlock."""

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from meshapi.models import Mesh
from tests.e2e import specs
from tests.e2e.appmesh_helpers import client_for
from tests.e2e.specs import ACCOUNT

N = 10


def _revision(mesh: str = "shop") -> int:
    return Mesh.objects.get(tenant__account_id=ACCOUNT, name=mesh).revision


def _together(calls: list[Callable[[], dict]]) -> list[dict | ClientError]:
    """Run every call at once, each on its own thread; a ClientError is returned, not raised."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait(timeout=10)
        try:
            return call()
        except ClientError as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _codes(results) -> Counter:
    return Counter(
        r.response["Error"]["Code"] if isinstance(r, ClientError) else "ok" for r in results
    )


@pytest.fixture
def clients(alice):
    """One boto3 client per thread (a client's connection pool is its own)."""
    return [client_for(alice) for _ in range(N)]


@pytest.fixture
def shop(clients):
    client = clients[0]
    client.create_mesh(meshName="shop")
    client.create_virtual_node(
        meshName="shop", virtualNodeName="orders", spec=specs.node_spec_minimal()
    )
    client.create_virtual_router(meshName="shop", virtualRouterName="orders", spec={})
    return client


def test_concurrent_updates_each_get_their_own_version(clients, shop):
    before = _revision()
    node_specs = [specs.node_spec_minimal(port=8000 + i) for i in range(N)]
    results = _together(
        [
            lambda c=c, s=s: c.update_virtual_node(
                meshName="shop", virtualNodeName="orders", spec=s
            )["virtualNode"]
            for c, s in zip(clients, node_specs, strict=True)
        ]
    )
    assert _codes(results) == {"ok": N}
    versions = sorted(r["metadata"]["version"] for r in results)
    assert versions == list(range(2, N + 2))
    # Each answer shows the spec its own request sent.
    for result, spec in zip(results, node_specs, strict=True):
        assert result["spec"] == spec

    node = shop.describe_virtual_node(meshName="shop", virtualNodeName="orders")["virtualNode"]
    assert node["metadata"]["version"] == N + 1
    last = next(r for r in results if r["metadata"]["version"] == N + 1)
    assert node["spec"] == last["spec"]
    assert _revision() == before + N


def test_concurrent_creates_of_one_name_have_one_winner(clients, shop):
    before = _revision()
    results = _together(
        [
            lambda c=c, i=i: c.create_virtual_node(
                meshName="shop", virtualNodeName="payments", spec=specs.node_spec_minimal(9000 + i)
            )["virtualNode"]
            for i, c in enumerate(clients)
        ]
    )
    assert _codes(results) == {"ok": 1, "ConflictException": N - 1}
    [winner] = [r for r in results if isinstance(r, dict)]
    nodes = shop.list_virtual_nodes(meshName="shop")["virtualNodes"]
    assert [n["virtualNodeName"] for n in nodes] == ["orders", "payments"]
    node = shop.describe_virtual_node(meshName="shop", virtualNodeName="payments")
    assert node["virtualNode"]["metadata"]["uid"] == winner["metadata"]["uid"]
    assert node["virtualNode"]["spec"] == winner["spec"]
    assert _revision() == before + 1

    results = _together([lambda c=c: c.create_mesh(meshName="solo")["mesh"] for c in clients])
    assert _codes(results) == {"ok": 1, "ConflictException": N - 1}
    assert [m["meshName"] for m in shop.list_meshes()["meshes"]] == ["shop", "solo"]


def test_concurrent_retries_of_a_create_replay_one_answer(clients):
    """A client retrying with its clientToken before the first answer arrives."""
    results = _together(
        [
            lambda c=c: c.create_mesh(
                meshName="shop", spec=specs.mesh_spec(), clientToken="create-shop"
            )["mesh"]
            for c in clients
        ]
    )
    assert _codes(results) == {"ok": N}
    assert all(r == results[0] for r in results)
    meshes = clients[0].list_meshes()["meshes"]
    assert [(m["meshName"], m["version"]) for m in meshes] == [("shop", 1)]

    results = _together(
        [
            lambda c=c: c.create_virtual_node(
                meshName="shop",
                virtualNodeName="payments",
                spec=specs.node_spec_dns(),
                clientToken="create-payments",
            )["virtualNode"]
            for c in clients
        ]
    )
    assert _codes(results) == {"ok": N}
    assert all(r == results[0] for r in results)
    nodes = clients[0].list_virtual_nodes(meshName="shop")["virtualNodes"]
    assert [(n["virtualNodeName"], n["version"]) for n in nodes] == [("payments", 1)]


def test_concurrent_retries_of_an_update_apply_it_once(clients, shop):
    spec = specs.node_spec_cloud_map()
    results = _together(
        [
            lambda c=c: c.update_virtual_node(
                meshName="shop", virtualNodeName="orders", spec=spec, clientToken="deploy-7"
            )["virtualNode"]
            for c in clients
        ]
    )
    assert _codes(results) == {"ok": N}
    assert {r["metadata"]["version"] for r in results} == {2}
    node = shop.describe_virtual_node(meshName="shop", virtualNodeName="orders")["virtualNode"]
    assert node["metadata"]["version"] == 2
    assert node["spec"] == spec


def test_concurrent_tags_are_all_kept(clients, shop):
    mesh_arn = specs.arn("mesh/shop")
    results = _together(
        [
            lambda c=c, i=i: c.tag_resource(
                resourceArn=mesh_arn, tags=[{"key": f"team-{i}", "value": str(i)}]
            )
            for i, c in enumerate(clients)
        ]
    )
    assert _codes(results) == {"ok": N}
    tags = shop.list_tags_for_resource(resourceArn=mesh_arn)["tags"]
    assert sorted(t["key"] for t in tags) == sorted(f"team-{i}" for i in range(N))


def test_mixed_writes_in_one_mesh_all_succeed(clients, shop):
    """Updating a router while routes are added to it and a service names it as provider."""
    before = _revision()
    router_spec = {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}

    def update_router(client):
        return client.update_virtual_router(
            meshName="shop", virtualRouterName="orders", spec=router_spec
        )

    def add_route(client, i):
        return client.create_route(
            meshName="shop",
            virtualRouterName="orders",
            routeName=f"route-{i}",
            spec=specs.http_route_path_exact("orders"),
        )

    def update_node(client):
        return client.update_virtual_node(
            meshName="shop", virtualNodeName="orders", spec=specs.node_spec_minimal()
        )

    def add_service(client, i):
        return client.create_virtual_service(
            meshName="shop",
            virtualServiceName=f"svc-{i}.shop.local",
            spec={"provider": {"virtualNode": {"virtualNodeName": "orders"}}},
        )

    calls = []
    for i, client in enumerate(clients):
        kind = i % 4
        if kind == 0:
            calls.append(lambda c=client: update_router(c))
        elif kind == 1:
            calls.append(lambda c=client, i=i: add_route(c, i))
        elif kind == 2:
            calls.append(lambda c=client: update_node(c))
        else:
            calls.append(lambda c=client, i=i: add_service(c, i))
    committed = 0
    for _ in range(3):
        codes = _codes(_together(calls))
        assert set(codes) <= {"ok", "ConflictException"}, codes
        committed += codes["ok"]
    routes = shop.list_routes(meshName="shop", virtualRouterName="orders")["routes"]
    assert len(routes) == len([i for i in range(N) if i % 4 == 1])
    router = shop.describe_virtual_router(meshName="shop", virtualRouterName="orders")
    assert router["virtualRouter"]["metadata"]["version"] == 1 + 3 * len(
        [i for i in range(N) if i % 4 == 0]
    )
    assert _revision() == before + committed


def test_a_provider_is_never_deleted_under_a_new_virtual_service(clients, shop):
    """Deleting a node while a service naming it is created: one of the two must lose."""
    for i in range(5):
        node = f"provider-{i}"
        shop.create_virtual_node(
            meshName="shop", virtualNodeName=node, spec=specs.node_spec_minimal()
        )
        delete, create = _together(
            [
                lambda c=clients[1], n=node: c.delete_virtual_node(
                    meshName="shop", virtualNodeName=n
                ),
                lambda c=clients[2], n=node: c.create_virtual_service(
                    meshName="shop",
                    virtualServiceName=f"{n}.shop.local",
                    spec={"provider": {"virtualNode": {"virtualNodeName": n}}},
                ),
            ]
        )
        codes = _codes([delete, create])
        if isinstance(delete, ClientError):
            assert codes == {"ResourceInUseException": 1, "ok": 1}
        else:
            assert codes == {"ok": 1, "NotFoundException": 1}
        services = shop.list_virtual_services(meshName="shop")["virtualServices"]
        nodes = [
            n["virtualNodeName"] for n in shop.list_virtual_nodes(meshName="shop")["virtualNodes"]
        ]
        for service in services:
            provider = shop.describe_virtual_service(
                meshName="shop", virtualServiceName=service["virtualServiceName"]
            )["virtualService"]["spec"]["provider"]["virtualNode"]["virtualNodeName"]
            assert provider in nodes
