"""A replica that dies (SIGKILL: it closes no stream) stops beating; another replica then
marks its instances disconnected and deregisters their endpoints, after the grace period,
while the live replica's instance keeps its endpoint."""

import time

import pytest
import requests

from tests.support.redis_server import RedisServer
from tests.xds.conftest import needs_redis
from tests.xds.support import RawAdsClient, XdsProcess, proxy_detail, wait_compiled, wait_for
from workers.compiler import xds

pytestmark = needs_redis

ARN = "arn:aws:appmesh:us-east-1:111111111111:mesh/shop/virtualNode/cart"
HEARTBEAT, DEAD_AFTER, GRACE = 0.5, 2.0, 1.0


@pytest.fixture
def own_redis(settings):
    """Heartbeats and pub/sub of these replicas only (no other test's replica beats here)."""
    server = RedisServer()
    settings.REDIS_URL = server.url
    yield server
    server.stop()


def registered(persona) -> dict[str, str]:
    url = f"{persona.base_url}/api/v1/meshes/shop/virtual-nodes/cart/endpoints/"
    rows = requests.get(url, headers=persona.bearer, timeout=30).json()["results"]
    return {e["instanceId"]: e["address"] for e in rows if e["source"] == "registered"}


def instances(persona) -> dict[str, dict]:
    detail = proxy_detail(persona, "shop", "virtualNode", "cart")
    return {i["instanceId"]: i for i in detail["instances"]}


def test_a_dead_replicas_instances_are_deregistered_a_live_ones_stay(
    alice, worker, own_redis, api_server, monkeypatch
):
    monkeypatch.setenv("MESHPLANE_XDS_HEARTBEAT_SECONDS", str(HEARTBEAT))
    monkeypatch.setenv("MESHPLANE_XDS_DEAD_AFTER_SECONDS", str(DEAD_AFTER))
    client = alice.appmesh()
    client.create_mesh(meshName="shop")
    client.create_virtual_node(
        meshName="shop",
        virtualNodeName="cart",
        spec={"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
    )
    wait_compiled(alice.tenant, "shop")
    replicas = {
        name: XdsProcess(insecure=True, replica=name, redis_url=own_redis.url, grace=GRACE)
        for name in ("doomed", "alive")
    }
    proxies = []
    try:
        for i, (name, replica) in enumerate(replicas.items()):
            metadata = {
                "APPMESH_RESOURCE_ARN": ARN,
                "instance_id": f"cart-{name}",
                "address": f"10.0.0.{i + 7}",
            }
            proxies.append(
                RawAdsClient(replica.ads, "mesh/shop/virtualNode/cart", metadata, {xds.CLUSTER: []})
            )
        both = {"cart-doomed": "10.0.0.7", "cart-alive": "10.0.0.8"}
        wait_for(lambda: registered(alice) == both, message=lambda: f"{registered(alice)}")
        # Both beat: longer than a dead replica's bound passes and nothing is reaped.
        time.sleep(DEAD_AFTER + GRACE + 2 * HEARTBEAT)
        assert registered(alice) == both
        assert all(i["connected"] for i in instances(alice).values())

        replicas["doomed"].kill()  # no stream is closed, nothing is deregistered by it
        wait_for(
            lambda: registered(alice) == {"cart-alive": "10.0.0.8"},
            timeout=30,
            message=lambda: f"{registered(alice)}\n{replicas['alive'].log()}",
        )
        status = instances(alice)
        assert not status["cart-doomed"]["connected"]
        assert status["cart-doomed"]["disconnectedAt"]
        assert status["cart-doomed"]["connections"][0]["closedAt"]
        assert status["cart-alive"]["connected"] and status["cart-alive"]["replica"] == "alive"
        # The live replica's proxy is still served and keeps its endpoint.
        time.sleep(2 * HEARTBEAT)
        assert registered(alice) == {"cart-alive": "10.0.0.8"}
        assert proxies[1].error is None
    finally:
        for proxy in proxies:
            proxy.close()
        for replica in replicas.values():
            replica.stop()
