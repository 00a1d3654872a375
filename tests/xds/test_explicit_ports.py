"""Explicit-mode proxies are served configurations listening on the ports they declared
(node.metadata app_port / ingress_port / egress_port), so two proxies on one host do not
share ports: the ports are part of the stored variant, compiled and kept like any other.
A redirected proxy keeps the defaults whatever it declares."""

from envoy.config.listener.v3 import listener_pb2

from meshapi.services import proxies as store
from tests.xds.conftest import needs_redis
from tests.xds.support import RawAdsClient, XdsProcess, wait_compiled, wait_for
from workers.compiler import xds

pytestmark = needs_redis

ARN = "arn:aws:appmesh:us-east-1:111111111111:mesh/shop/virtualNode/{}"


def listener_ports(proxy: RawAdsClient) -> set[int] | None:
    """The ports of the listeners the proxy was last sent (None until it got some)."""
    response = proxy.last.get(xds.LISTENER)
    if response is None or not response.resources:
        return None
    ports = set()
    for resource in response.resources:
        listener = listener_pb2.Listener()
        resource.Unpack(listener)
        ports.add(listener.address.socket_address.port_value)
    return ports


def connect(server: XdsProcess, node: str, instance: str, **declared) -> RawAdsClient:
    metadata = {
        "APPMESH_RESOURCE_ARN": ARN.format(node),
        "instance_id": instance,
        "address": "127.0.0.1",
        **declared,
    }
    return RawAdsClient(server.ads, f"mesh/shop/virtualNode/{node}", metadata, {xds.LISTENER: []})


def test_explicit_proxies_listen_on_the_ports_they_declared(alice, worker, api_server):
    client = alice.appmesh()
    client.create_mesh(meshName="shop")
    for node in ("cart", "web"):
        client.create_virtual_node(
            meshName="shop",
            virtualNodeName=node,
            spec={"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
        )
    wait_compiled(alice.tenant, "shop")
    server = XdsProcess(insecure=True)
    proxies: list[RawAdsClient] = []
    try:
        explicit = {"interception": "explicit"}
        cart_a = connect(
            server, "cart", "cart-a", **explicit, app_port=9001, ingress_port=16000,
            egress_port=16100,
        )  # fmt: skip
        cart_b = connect(
            server, "cart", "cart-b", **explicit, app_port=9002, ingress_port=17000,
            egress_port=17100,
        )  # fmt: skip
        web = connect(server, "web", "web-1", **explicit, ingress_port=18000)
        # Redirected: declared ports do not apply, it shares the default variant.
        redirected = connect(server, "web", "web-2", ingress_port=19000)
        proxies += [cart_a, cart_b, web, redirected]
        for proxy in proxies:
            wait_for(lambda p=proxy: listener_ports(p), message=server.log)
        assert listener_ports(cart_a) == {16000}
        assert listener_ports(cart_b) == {17000}
        assert listener_ports(web) == {18000}
        assert 15000 in listener_ports(redirected)  # App Mesh's iptables ingress port

        ref = store.find_proxy(alice.tenant, "shop", "virtualNode", "cart")
        stored = {
            (row.interception, row.app_port, row.ingress_port, row.egress_port)
            for row in store.variants_of(ref)
            if row.current is not None
        }
        assert {("explicit", 9001, 16000, 16100), ("explicit", 9002, 17000, 17100)} <= stored
        # The ingress listener forwards to the app port the proxy declared.
        row = store.variant(ref, "envoy", "explicit", (9001, 16000, 16100))
        assert row is not None and row.current is not None
        clusters = store.resources_json(ref.mesh.id, row.current)
        assert "9001" in str(clusters) and "9002" not in str(clusters)
        web_ref = store.find_proxy(alice.tenant, "shop", "virtualNode", "web")
        assert {(r.interception, r.ingress_port) for r in store.variants_of(web_ref)} == {
            ("redirect", 0),
            ("explicit", 18000),
        }
    finally:
        for proxy in proxies:
            proxy.close()
        server.stop()
