"""A replica that dies (SIGKILL: it closes no stream) stops beating; another replica then
marks its instances disconnected and deregisters their endpoints, after the grace period,
while the live replica's instance keeps its endpoint.

A replica stopped cleanly (SIGTERM) closes its streams but drops the deregistrations
waiting out the grace period: another replica's sweep deregisters the endpoints of those
instances once they have been gone longer than the grace period plus `dead_after`, while
one that reconnected keeps its endpoint. The sweep needs no Redis (the embedded mode)."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.db import connections

from tests.xds.conftest import needs_redis
from tests.xds.support import (
    RawAdsClient,
    XdsProcess,
    create_cart,
    list_endpoints,
    proxy_detail,
    wait_for,
)
from workers.compiler import xds
from workers.xds import reaper, status
from workers.xds.auth import Identity

pytestmark = needs_redis

ARN = "arn:aws:appmesh:us-east-1:111111111111:mesh/shop/virtualNode/cart"
HEARTBEAT, DEAD_AFTER, GRACE = 0.5, 2.0, 1.0


def registered(persona) -> dict[str, str]:
    rows = list_endpoints(persona, "shop", "cart")
    return {e["instanceId"]: e["address"] for e in rows if e["source"] == "registered"}


def instances(persona) -> dict[str, dict]:
    detail = proxy_detail(persona, "shop", "virtualNode", "cart")
    return {i["instanceId"]: i for i in detail["instances"]}


def test_a_dead_replicas_instances_are_deregistered_a_live_ones_stay(
    alice, worker, own_redis, api_server, monkeypatch
):
    monkeypatch.setenv("MESHPLANE_XDS_HEARTBEAT_SECONDS", str(HEARTBEAT))
    monkeypatch.setenv("MESHPLANE_XDS_DEAD_AFTER_SECONDS", str(DEAD_AFTER))
    create_cart(alice)
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


def cart_proxy(ads: str, name: str, address: str) -> RawAdsClient:
    metadata = {"APPMESH_RESOURCE_ARN": ARN, "instance_id": name, "address": address}
    return RawAdsClient(ads, "mesh/shop/virtualNode/cart", metadata, {xds.CLUSTER: []})


def test_a_stopped_replicas_gone_instances_are_swept_a_reconnected_one_stays(
    alice, worker, own_redis, api_server, monkeypatch
):
    monkeypatch.setenv("MESHPLANE_XDS_HEARTBEAT_SECONDS", str(HEARTBEAT))
    monkeypatch.setenv("MESHPLANE_XDS_DEAD_AFTER_SECONDS", str(DEAD_AFTER))
    create_cart(alice)
    stopping = XdsProcess(insecure=True, replica="stopping", redis_url=own_redis.url, grace=GRACE)
    alive = XdsProcess(insecure=True, replica="alive", redis_url=own_redis.url, grace=GRACE)
    proxies = []
    try:
        proxies += [
            cart_proxy(stopping.ads, "cart-gone", "10.0.0.7"),
            cart_proxy(stopping.ads, "cart-back", "10.0.0.8"),
        ]
        both = {"cart-gone": "10.0.0.7", "cart-back": "10.0.0.8"}
        wait_for(lambda: registered(alice) == both, message=lambda: f"{registered(alice)}")

        stopping.stop()  # SIGTERM: its streams are closed, its pending deregistrations dropped
        status_now = instances(alice)
        assert registered(alice) == both  # its deregistrations were dropped
        assert not status_now["cart-gone"]["connected"]
        assert not status_now["cart-back"]["connected"]
        # cart-back's proxy reconnects to the live replica at once (within the grace).
        proxies.append(cart_proxy(alive.ads, "cart-back", "10.0.0.8"))
        wait_for(
            lambda: instances(alice)["cart-back"]["connected"],
            message=lambda: f"{instances(alice)}\n{alive.log()}",
        )
        # cart-gone never comes back: the live replica's sweep deregisters it.
        wait_for(
            lambda: registered(alice) == {"cart-back": "10.0.0.8"},
            timeout=30,
            message=lambda: f"{registered(alice)}\n{alive.log()}",
        )
        # The stopped replica is gone: the live one's sweep did it, and says so.
        wait_for(lambda: "deregistered 1 endpoint(s) of 1 instance(s)" in alive.log())
        status_now = instances(alice)
        assert not status_now["cart-gone"]["connected"]
        assert status_now["cart-back"]["connected"]
        assert status_now["cart-back"]["replica"] == "alive"
        # Longer than the sweep's bound again: the reconnected instance keeps its endpoint.
        time.sleep(DEAD_AFTER + GRACE + 2 * HEARTBEAT)
        assert registered(alice) == {"cart-back": "10.0.0.8"}
        assert proxies[-1].error is None
    finally:
        for proxy in proxies:
            proxy.close()
        alive.stop()
        stopping.stop()


def open_cart(alice, instance_id: str, address: str) -> tuple[Identity, status.Declared, int]:
    identity = Identity(alice.tenant.pk, alice.tenant.account_id, "shop", "virtualNode", "cart", "")
    declared = status.Declared("envoy", "redirect", instance_id, address, [])
    pk = status.open_instance(identity, declared, "r1", f"stream-{instance_id}", "sotw")
    status.register_instance(identity, declared)
    return identity, declared, pk


def test_the_sweep_needs_no_redis_and_spares_a_reconnected_instance(
    alice, worker, api_server, settings
):
    """What an embedded control plane (no REDIS_URL) runs: the Reaper's pass sweeps."""
    from meshapi.models import ProxyInstance

    settings.REDIS_URL = ""
    create_cart(alice)
    _, _, gone = open_cart(alice, "cart-gone", "10.0.0.7")
    identity, declared, back = open_cart(alice, "cart-back", "10.0.0.8")
    _, _, fresh = open_cart(alice, "cart-fresh", "10.0.0.9")
    for pk, instance_id in ((gone, "cart-gone"), (back, "cart-back"), (fresh, "cart-fresh")):
        assert status.close_instance(pk, f"stream-{instance_id}")
    # Two were gone long ago (their replica stopped before deregistering them); one just now.
    long_ago = ProxyInstance.objects.get(pk=gone).disconnected_at - timedelta(hours=1)
    ProxyInstance.objects.filter(pk__in=(gone, back)).update(disconnected_at=long_ago)
    # cart-back reconnected since (the open the sweep's compare-and-set must see).
    status.open_instance(identity, declared, "r2", "stream-again", "sotw")
    assert set(registered(alice)) == {"cart-gone", "cart-back", "cart-fresh"}

    async def one_pass() -> None:
        # One thread for the Reaper's database work, so its connection can be closed after.
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        task = asyncio.create_task(reaper.Reaper("embedded", grace_seconds=1.0).run())
        try:
            deadline = time.monotonic() + 30
            while "cart-gone" in registered(alice):
                assert time.monotonic() < deadline, f"never swept: {registered(alice)}"
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            await loop.run_in_executor(None, connections.close_all)

    asyncio.run(one_pass())
    assert registered(alice) == {"cart-back": "10.0.0.8", "cart-fresh": "10.0.0.9"}
    assert reaper.sweep(3600.0) == 0  # nothing left over an hour gone


def test_a_replica_restarted_under_its_name_disconnects_what_it_left(
    alice, worker, own_redis, api_server, monkeypatch
):
    """A name that keeps beating is never reaped by another replica: the new process
    of that name clears what the killed one left connected, before it serves."""
    monkeypatch.setenv("MESHPLANE_XDS_HEARTBEAT_SECONDS", str(HEARTBEAT))
    monkeypatch.setenv("MESHPLANE_XDS_DEAD_AFTER_SECONDS", str(DEAD_AFTER))
    create_cart(alice)
    first = XdsProcess(insecure=True, replica="pod-0", redis_url=own_redis.url, grace=GRACE)
    proxies = []
    second = None
    try:
        proxies.append(cart_proxy(first.ads, "cart-old", "10.0.0.7"))
        wait_for(lambda: registered(alice) == {"cart-old": "10.0.0.7"})
        first.kill()  # closes no stream, deregisters nothing
        assert instances(alice)["cart-old"]["connected"]
        second = XdsProcess(insecure=True, replica="pod-0", redis_url=own_redis.url, grace=GRACE)
        # Cleared before the new process said it was ready: no waiting.
        assert not instances(alice)["cart-old"]["connected"]
        assert registered(alice) == {}
        proxies.append(cart_proxy(second.ads, "cart-new", "10.0.0.8"))
        wait_for(lambda: registered(alice) == {"cart-new": "10.0.0.8"})
        now = instances(alice)
        assert now["cart-new"]["connected"] and now["cart-new"]["replica"] == "pod-0"
        assert not now["cart-old"]["connected"]
    finally:
        for proxy in proxies:
            proxy.close()
        first.stop()
        if second is not None:
            second.stop()
