"""gRPC's own xDS client (grpcio, `xds:///greeter.shop.local`) against `serve_xds` as a
process, over mTLS with a certificate from Join, on a mesh built through boto3.

The client runs in a subprocess (gRPC reads its bootstrap once per process) holding one
channel for the whole test, so "without reconnecting" is checked on the server's record
of the client's streams."""

import pytest
import requests

from tests.support.live import free_port
from tests.xds.conftest import needs_redis
from tests.xds.meshes import MESH, SERVICE, build_greeter_mesh, greeter_spec
from tests.xds.support import (
    GreeterBackend,
    GrpcXdsClient,
    XdsProcess,
    add_static_endpoint,
    grpc_bootstrap,
    join_certificate,
    proxy_detail,
    wait_compiled,
    wait_for,
)

pytestmark = needs_redis

CLIENT_ID = f"mesh/{MESH}/virtualNode/client"


@pytest.fixture
def greeters():
    backends = GreeterBackend("v1"), GreeterBackend("v2")
    yield backends
    for backend in backends:
        backend.stop()


@pytest.fixture
def xds_server(api_server, worker):
    server = XdsProcess(join_port=free_port())
    yield server
    server.stop()


@pytest.fixture
def greeter_mesh(alice, greeters, worker):
    client = alice.appmesh()
    v1, v2 = greeters
    build_greeter_mesh(client, v1.port, v2.port)
    add_static_endpoint(alice, MESH, "greeter-v1", v1.port)
    add_static_endpoint(alice, MESH, "greeter-v2", v2.port)
    wait_compiled(alice.tenant, MESH)
    return client


def _instance(alice) -> dict:
    instances = proxy_detail(alice, MESH, "virtualNode", "client")["instances"]
    assert len(instances) == 1, instances
    return instances[0]


def test_weighted_and_header_routes_and_an_update_without_reconnecting(
    alice, greeter_mesh, xds_server, tmp_path
):
    creds = join_certificate(alice.tenant, MESH, "virtualNode", "client", xds_server.join, tmp_path)
    bootstrap = grpc_bootstrap(xds_server.ads, CLIENT_ID, creds, {"instance_id": "client-1"})
    client = GrpcXdsClient(SERVICE, bootstrap)
    try:
        seen = []
        wait_for(
            lambda: set(seen.append(client.call(5)) or seen[-1]) <= {"v1", "v2"},
            message=lambda: f"never routed: {seen[-1:]}\n{client.errors()}\n{xds_server.log()}",
        )
        counts = client.call(1000)
        assert set(counts) <= {"v1", "v2"}, counts
        assert 14 <= counts.get("v2", 0) / 10 <= 26, counts  # 20 % ± 6 points
        assert client.call(50, {"x-canary": "yes"}) == {"v2": 50}

        # ACKs are written in small batches: wait for all four types.
        before = wait_for(
            lambda: len((i := _instance(alice))["ackedVersions"]) >= 4 and i,
            message=lambda: f"ACKs not recorded: {_instance(alice)}",
        )
        assert before["connected"] and before["consumer"] == "grpc"
        assert before["connections"][0]["peer"] == creds.spiffe_id
        assert set(before["ackedVersions"]) >= {"listeners", "routes", "clusters", "endpoints"}

        greeter_mesh.update_route(
            meshName=MESH,
            virtualRouterName="greeter",
            routeName="split",
            spec=greeter_spec((0, 100)),
        )
        wait_for(lambda: client.call(20) == {"v2": 20}, message="the update never took effect")
        after = wait_for(
            lambda: (
                (i := _instance(alice))["ackedVersions"]["routes"]
                != before["ackedVersions"]["routes"]
                and i
            ),
            message="the new routes were never ACKed",
        )
        assert [c["stream"] for c in after["connections"]] == [
            c["stream"] for c in before["connections"]
        ]  # the same single stream: no reconnect
        assert after["connections"][0]["closedAt"] is None
        summary = wait_for(
            lambda: (
                (d := proxy_detail(alice, MESH, "virtualNode", "client")["instanceSummary"])[
                    "upToDate"
                ]
                and d
            ),
            message="the instance never counted as up to date",
        )
        assert summary == {"connected": 1, "upToDate": 1, "rejectingCurrent": 0}
    finally:
        client.stop()


def test_a_route_the_client_rejects_is_nacked_and_the_api_shows_its_words(
    alice, greeter_mesh, xds_server, tmp_path
):
    creds = join_certificate(alice.tenant, MESH, "virtualNode", "client", xds_server.join, tmp_path)
    bootstrap = grpc_bootstrap(xds_server.ads, CLIENT_ID, creds, {"instance_id": "client-1"})
    client = GrpcXdsClient(SERVICE, bootstrap)
    try:
        wait_for(lambda: set(client.call(5)) <= {"v1", "v2"}, message=client.errors)
        good = wait_for(
            lambda: _instance(alice)["ackedVersions"].get("routes"), message="no ACK recorded"
        )
        # Python's re takes a lookahead, so the API stores it; gRPC's RE2 refuses it.
        greeter_mesh.update_route(
            meshName=MESH,
            virtualRouterName="greeter",
            routeName="canary",
            spec={
                "priority": 0,
                "grpcRoute": {
                    "match": {
                        "serviceName": "test.Greeter",
                        "metadata": [{"name": "x-canary", "match": {"regex": "(?=yes)y.*"}}],
                    },
                    "action": {"weightedTargets": [{"virtualNode": "greeter-v2", "weight": 1}]},
                },
            },
        )
        instance = wait_for(
            lambda: (i := _instance(alice))["lastNack"] and i,
            message=lambda: f"no NACK recorded: {_instance(alice)}\n{client.errors()}",
        )
        config = requests.get(
            f"{alice.base_url}/api/v1/meshes/{MESH}/proxies/virtualNode/client/config",
            params={"consumer": "grpc"},
            headers=alice.bearer,
            timeout=30,
        ).json()
        nack = instance["lastNack"]
        assert nack["type"] == "routes"
        assert nack["version"] == config["typeVersions"]["routes"]  # the rejected one
        assert "regex" in nack["errorDetail"].lower(), nack
        # The client keeps its last good routes, and says so.
        assert instance["ackedVersions"]["routes"] == good
        summary = proxy_detail(alice, MESH, "virtualNode", "client")["instanceSummary"]
        assert summary == {"connected": 1, "upToDate": 0, "rejectingCurrent": 1}
        assert set(client.call(20)) <= {"v1", "v2"}
    finally:
        client.stop()
