"""A proxy's stream registers its instance as an endpoint of its virtual node (source
`registered`) and the API shows the instance; closing the stream marks it disconnected at
once and deregisters the endpoint after the grace period."""

from tests.xds.conftest import needs_redis
from tests.xds.support import (
    RawAdsClient,
    XdsProcess,
    create_cart,
    list_endpoints,
    proxy_detail,
    wait_compiled,
    wait_for,
)
from workers.compiler import xds

pytestmark = needs_redis

ARN = "arn:aws:appmesh:us-east-1:111111111111:mesh/shop/virtualNode/{}"


def endpoints(persona, node: str) -> list[dict]:
    return list_endpoints(persona, "shop", node)


def test_stream_registers_the_instance_and_closing_deregisters_it_after_grace(
    alice, worker, api_server
):
    client = alice.appmesh()
    client.create_mesh(meshName="shop")
    client.create_virtual_node(
        meshName="shop",
        virtualNodeName="cart",
        spec={
            "listeners": [
                {"portMapping": {"port": 8080, "protocol": "http"}},
                {"portMapping": {"port": 9090, "protocol": "grpc"}},
            ]
        },
    )
    client.create_virtual_node(
        meshName="shop",
        virtualNodeName="web",
        spec={
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": "web.internal"}},
        },
    )
    wait_compiled(alice.tenant, "shop")
    server = XdsProcess(insecure=True, grace=2.0)
    proxies = []
    try:
        cart = RawAdsClient(
            server.ads,
            "mesh/shop/virtualNode/cart",
            {
                "APPMESH_RESOURCE_ARN": ARN.format("cart"),
                "instance_id": "task-1",
                "address": "10.0.0.7",
                "ports": [8080],
            },
            {xds.CLUSTER: []},
        )
        proxies.append(cart)
        # Found through DNS: its callers resolve web.internal; nothing to register.
        web = RawAdsClient(
            server.ads,
            "mesh/shop/virtualNode/web",
            {"APPMESH_RESOURCE_ARN": ARN.format("web"), "instance_id": "web-1"},
            {xds.CLUSTER: []},
        )
        proxies.append(web)
        registered = wait_for(
            lambda: [e for e in endpoints(alice, "cart") if e["source"] == "registered"],
            message=server.log,
        )
        assert [(e["address"], e["port"], e["instanceId"]) for e in registered] == [
            ("10.0.0.7", 8080, "task-1")
        ]
        (instance,) = proxy_detail(alice, "shop", "virtualNode", "cart")["instances"]
        assert instance["connected"] and instance["address"] == "10.0.0.7"
        assert instance["ports"] == [8080] and instance["replica"] == "r1"
        wait_for(lambda: proxy_detail(alice, "shop", "virtualNode", "web")["instances"])
        assert endpoints(alice, "web") == []

        cart.close()
        gone = wait_for(
            lambda: (
                (i := proxy_detail(alice, "shop", "virtualNode", "cart")["instances"][0])[
                    "disconnectedAt"
                ]
                and i
            ),
            message=lambda: f"the closed stream was never recorded\n{server.log()}",
        )
        assert not gone["connected"] and gone["connections"][0]["closedAt"]
        wait_for(
            lambda: not [e for e in endpoints(alice, "cart") if e["source"] == "registered"],
            message="the endpoint was never deregistered",
        )
    finally:
        for proxy in proxies:
            proxy.close()
        server.stop()


def test_a_proxy_back_within_the_grace_period_keeps_its_endpoint(alice, worker, api_server):
    import time

    create_cart(alice)
    grace = 3.0
    server = XdsProcess(insecure=True, grace=grace)
    metadata = {
        "APPMESH_RESOURCE_ARN": ARN.format("cart"),
        "instance_id": "task-1",
        "address": "10.0.0.7",
    }
    proxy = None
    try:
        proxy = RawAdsClient(server.ads, "mesh/shop/virtualNode/cart", metadata, {xds.CLUSTER: []})
        wait_for(lambda: endpoints(alice, "cart"), message=server.log)
        proxy.close()
        wait_for(
            lambda: proxy_detail(alice, "shop", "virtualNode", "cart")["instances"][0][
                "disconnectedAt"
            ],
            message="the close was never recorded",
        )
        # Back (a restarted proxy, a reconnect) before the grace period ends.
        proxy = RawAdsClient(server.ads, "mesh/shop/virtualNode/cart", metadata, {xds.CLUSTER: []})
        wait_for(
            lambda: proxy_detail(alice, "shop", "virtualNode", "cart")["instances"][0]["connected"]
        )
        time.sleep(grace + 1.0)  # past the first stream's grace period
        assert [(e["address"], e["source"]) for e in endpoints(alice, "cart")] == [
            ("10.0.0.7", "registered")
        ]
        (instance,) = proxy_detail(alice, "shop", "virtualNode", "cart")["instances"]
        assert instance["connected"] and len(instance["connections"]) == 2
    finally:
        if proxy is not None:
            proxy.close()
        server.stop()
