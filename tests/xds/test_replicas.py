"""Two serve_xds replicas (insecure loopback mode, tenant from the App Mesh ARN) and a
Redis of the test's own, restarted in the middle: every proxy, whichever replica holds
its stream, gets every version, including one stored while Redis was down."""

import requests

from meshapi.services import proxies as proxies_service
from tests.xds.conftest import needs_redis
from tests.xds.meshes import MESH, build_greeter_mesh, greeter_spec
from tests.xds.support import (
    XdsProcess,
    add_static_endpoint,
    proxy_detail,
    wait_compiled,
    wait_for,
)
from workers.compiler import xds
from workers.tasks.compile import enqueue_compile

pytestmark = needs_redis

ARN = "arn:aws:appmesh:us-east-1:111111111111:mesh/shop/virtualNode/client"
NODE = f"mesh/{MESH}/virtualNode/client"


def routes_version(alice) -> tuple[str, str]:
    body = requests.get(
        f"{alice.base_url}/api/v1/meshes/{MESH}/proxies/virtualNode/client/config",
        params={"consumer": "envoy", "mode": "explicit"},
        headers=alice.bearer,
        timeout=30,
    ).json()
    return body["typeVersions"]["routes"], body["routes"][0]["name"] if body["routes"] else ""


def test_two_replicas_and_a_redis_restart_lose_no_push(alice, worker, own_redis, api_server):
    from tests.xds.support import RawAdsClient

    client = alice.appmesh()
    build_greeter_mesh(client, 50001, 50002)
    add_static_endpoint(alice, MESH, "greeter-v1", 50001)
    add_static_endpoint(alice, MESH, "greeter-v2", 50002)
    wait_compiled(alice.tenant, MESH)
    # The replicas' own broker is the test's Redis, where no worker listens: ask for the
    # explicit variant here, where compiles reach the worker.
    ref = proxies_service.find_proxy(alice.tenant, MESH, "virtualNode", "client")
    assert proxies_service.request_variant(ref, "envoy", "explicit")
    enqueue_compile(ref.mesh.id)
    wait_for(
        lambda: (v := proxies_service.variant(ref, "envoy", "explicit")) and v.current_id,
        message="the explicit variant was never compiled",
    )

    # A long poll: only pub/sub and the re-read on reconnect can bring updates in time.
    replicas = [
        XdsProcess(insecure=True, replica=name, redis_url=own_redis.url, poll=600)
        for name in ("r1", "r2")
    ]
    proxies = []
    try:
        route_name = routes_version(alice)[1]
        subscriptions = {xds.LISTENER: [], xds.ROUTE: [route_name]}
        for i, replica in enumerate(replicas):
            metadata = {
                "APPMESH_RESOURCE_ARN": ARN,
                "interception": "explicit",
                "instance_id": f"client-{i}",
            }
            proxies.append(RawAdsClient(replica.ads, NODE, metadata, subscriptions))

        def all_have(version: str) -> bool:
            return all(version in p.versions(xds.ROUTE) for p in proxies)

        def why() -> str:
            return f"{[p.versions(xds.ROUTE) for p in proxies]}\n" + "\n".join(
                r.log() for r in replicas
            )

        wait_for(lambda: all_have(routes_version(alice)[0]), message=why)

        for weights in ((50, 50), (10, 90)):
            client.update_route(
                meshName=MESH,
                virtualRouterName="greeter",
                routeName="split",
                spec=greeter_spec(weights),
            )
            wait_compiled(alice.tenant, MESH)
            wait_for(lambda: all_have(routes_version(alice)[0]), timeout=15, message=why)

        # Redis down while a version is stored: its publish is lost.
        own_redis.stop()
        client.update_route(
            meshName=MESH,
            virtualRouterName="greeter",
            routeName="split",
            spec=greeter_spec((30, 70)),
        )
        wait_compiled(alice.tenant, MESH)
        while_down = routes_version(alice)[0]
        own_redis.start()
        wait_for(lambda: all_have(while_down), timeout=20, message=why)

        # And after the restart, pub/sub carries the next one.
        client.update_route(
            meshName=MESH,
            virtualRouterName="greeter",
            routeName="split",
            spec=greeter_spec((70, 30)),
        )
        wait_compiled(alice.tenant, MESH)
        wait_for(lambda: all_have(routes_version(alice)[0]), timeout=15, message=why)

        instances = proxy_detail(alice, MESH, "virtualNode", "client")["instances"]
        by_id = {i["instanceId"]: i for i in instances}
        assert by_id["client-0"]["replica"] == "r1" and by_id["client-1"]["replica"] == "r2"
        assert all(by_id[f"client-{n}"]["connected"] for n in (0, 1))
        assert all(p.error is None for p in proxies)
    finally:
        for proxy in proxies:
            proxy.close()
        for replica in replicas:
            replica.stop()
