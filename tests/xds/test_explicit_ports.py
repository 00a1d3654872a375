"""Explicit-mode proxies are served configurations listening on the ports they declared
(node.metadata app_port / ingress_port / egress_port), so two proxies on one host do not
share ports: the ports are part of the stored variant, compiled and kept like any other.
A redirected proxy keeps the defaults whatever it declares.

Callers reach an explicit-mode instance at its own ingress listener: it is registered on
the node's listener port with that ingress port as the target, and callers' EDS address
it there; closing one instance deregisters only its own endpoint."""

from envoy.config.listener.v3 import listener_pb2

from meshapi.models import Endpoint
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


def wait_listeners(server: XdsProcess, name: str, proxy: RawAdsClient, expected) -> None:
    """Until the listeners `proxy` was last sent satisfy `expected` (bounded)."""
    wait_for(
        lambda: (ports := listener_ports(proxy)) is not None and expected(ports),
        message=lambda: (
            f"{name} was last sent listeners on {listener_ports(proxy)}\n{server.log()}"
        ),
    )


def registered(node: str) -> set[tuple[int, int, str]]:
    return set(
        Endpoint.objects.filter(
            virtual_node__name=node, source="registered", address="127.0.0.1"
        ).values_list("port", "target_port", "instance_id")
    )


def cart_eds(ref) -> set[int]:
    """The ports web's explicit-mode variant is sent for cart's cluster (127.0.0.1)."""
    row = store.variant(ref, "envoy", "explicit", (0, 18000, 0))
    if row is None or row.current is None:
        return set()
    ports = set()
    for cla in store.resources_json(ref.mesh.id, row.current).get("endpoints", []):
        if "cart" not in cla["cluster_name"]:
            continue
        for locality in cla.get("endpoints", []):
            for lb in locality["lb_endpoints"]:
                ports.add(lb["endpoint"]["address"]["socket_address"]["port_value"])
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
    listener = {"portMapping": {"port": 8080, "protocol": "http"}}
    client.create_virtual_node(
        meshName="shop", virtualNodeName="cart", spec={"listeners": [listener]}
    )
    client.create_virtual_service(
        meshName="shop",
        virtualServiceName="cart.shop.local",
        spec={"provider": {"virtualNode": {"virtualNodeName": "cart"}}},
    )
    client.create_virtual_node(
        meshName="shop",
        virtualNodeName="web",
        spec={
            "listeners": [listener],
            "backends": [{"virtualService": {"virtualServiceName": "cart.shop.local"}}],
        },
    )
    wait_compiled(alice.tenant, "shop")
    server = XdsProcess(insecure=True, grace=1.0)
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
        # Each proxy's complete listeners (web's egress comes with a later compile than its
        # ingress: the first response may not have it yet).
        wait_listeners(server, "cart-a", cart_a, lambda ports: ports == {16000})
        wait_listeners(server, "cart-b", cart_b, lambda ports: ports == {17000})
        # Its egress for cart: the default.
        wait_listeners(server, "web-1", web, lambda ports: ports == {18000, 15001})
        # App Mesh's iptables ingress port.
        wait_listeners(server, "web-2", redirected, lambda ports: 15000 in ports)

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

        # Registered where callers reach them: cart's listener port 8080, each instance at
        # its own ingress port; the redirected web-2 at the listener port itself.
        wait_for(
            lambda: registered("cart") == {(8080, 16000, "cart-a"), (8080, 17000, "cart-b")},
            message=lambda: f"{registered('cart')}\n{server.log()}",
        )
        wait_for(lambda: (8080, 8080, "web-2") in registered("web"), message=server.log)
        # The caller's EDS for cart: both instances, at their ingress ports.
        wait_for(
            lambda: cart_eds(web_ref) == {16000, 17000}, message=lambda: str(cart_eds(web_ref))
        )

        cart_a.close()
        proxies.remove(cart_a)
        wait_for(lambda: registered("cart") == {(8080, 17000, "cart-b")}, message=server.log)
        wait_for(lambda: cart_eds(web_ref) == {17000}, message=lambda: str(cart_eds(web_ref)))
    finally:
        for proxy in proxies:
            proxy.close()
        server.stop()
