"""One compile, one pub/sub message: the versions a compile stores go out on Redis as one
batch, and a replica's refresher serves every variant in it; a bare message (what a
publisher before batching sends, e.g. during a rolling deploy) is still served."""

import asyncio
import json
import time

import pytest
import redis
from django.conf import settings

from meshapi.services import proxies as store
from meshapi.services import resources
from meshapi.services.kinds import VIRTUAL_NODE
from tenants.services import create_tenant
from tests.workers import meshes
from tests.xds.conftest import needs_redis
from workers import publish
from workers.celery import app
from workers.xds.cache import CacheRefresher, ConfigCache, Key

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 5  # virtual nodes calling catalog.shop.local besides frontend


def test_a_batch_is_split_into_bounded_chunks_and_decoded_back():
    messages = [{"proxy": f"mesh/shop/virtualNode/n{i}", "version": "v"} for i in range(2500)]
    payloads = publish.encode(messages)
    assert len(payloads) == 3
    decoded = [m for payload in payloads for m in publish.decode(payload)]
    assert decoded == messages

    # What the messages of a compile share goes once per group: five proxies of one
    # 200 KB version are one payload; five 200 KB proxy names are two, two and one.
    same = [{"proxy": f"p{i}", "version": "x" * 200_000} for i in range(5)]
    payloads = publish.encode(same)
    assert len(payloads) == 1 and len(payloads[0]) < 201_000
    assert publish.decode(payloads[0]) == same
    big = [{"proxy": "p" * 200_000, "version": "x"} for _ in range(5)]
    payloads = publish.encode(big)
    assert len(payloads) == 3  # two, two, one: each chunk about 512 KB at most
    assert all(len(p) < publish.MAX_BATCH_BYTES + 1000 for p in payloads)
    assert [m for p in payloads for m in publish.decode(p)] == big

    assert publish.decode(json.dumps(messages[0])) == [messages[0]]  # the single format
    older = json.dumps({"batch": messages[:3]})  # what publishers before grouping sent
    assert publish.decode(older) == messages[:3]
    assert publish.decode(b"not json") == []


@pytest.fixture
def eager():
    """Compiles in-process on every write; the pipeline publishes on this run's channel."""
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = eager


@pytest.fixture
def conn_max_age_zero(monkeypatch):
    from django.db import connections

    # The cache's loading threads close their connections after each load (as serve_xds
    # does with MESHPLANE_DB_CONN_MAX_AGE=0), so none outlives the test.
    monkeypatch.setitem(connections.databases["default"], "CONN_MAX_AGE", 0)


def shop_with_clients(tenant):
    mesh = meshes.shop(tenant)
    backend = {"virtualService": {"virtualServiceName": "catalog.shop.local"}}
    for i in range(CLIENTS):
        spec = {
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": f"c{i}.shop.local"}},
            "backends": [backend],
        }
        resources.create(
            tenant, VIRTUAL_NODE, meshes.WRITER, mesh_name="shop", name=f"c{i}", spec=spec
        )
    return mesh


def callers(tenant, mesh) -> list[Key]:
    names = ["frontend"] + [f"c{i}" for i in range(CLIENTS)]
    return [
        Key(tenant.account_id, f"mesh/{mesh.name}/virtualNode/{n}", "envoy", "redirect")
        for n in names
    ]


def stored_versions(mesh) -> dict[str, str]:
    return {
        name: row.current.version
        for (kind, name, *_), row in store.stored_configs(mesh.id).items()
        if row.current
    }


def _in_thread(fn, *args):
    from django.db import connections

    try:
        return fn(*args)
    finally:
        connections.close_all()  # this worker thread's connection


def serve_change(keys: list[Key], change) -> tuple[dict, dict]:
    """Watch `keys` with a refresher subscribed (no poll), run `change` in a thread, and
    wait (bounded) until every key was handed a new version: ({key: first}, {key: last})."""

    async def scenario():
        cache = ConfigCache()
        updates: asyncio.Queue = asyncio.Queue()
        first = {}
        for key in keys:
            first[key] = await cache.watch(
                key, lambda entry, key=key: updates.put_nowait((key, entry))
            )
        refresher = CacheRefresher(cache, poll_seconds=3600)
        refresher.start()
        try:
            assert await asyncio.to_thread(refresher.subscribed.wait, 10)
            await asyncio.to_thread(_in_thread, change)
            last = dict(first)
            while any(last[key].version == first[key].version for key in keys):
                key, entry = await asyncio.wait_for(updates.get(), timeout=20)
                last[key] = entry
        finally:
            await asyncio.to_thread(refresher.stop)
        return first, last

    return asyncio.run(scenario())


def payloads_on_channel(pubsub) -> list[bytes]:
    out = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message:
            out.append(message["data"])
    return out


@needs_redis
def test_a_compile_of_several_variants_publishes_one_message_and_a_replica_serves_them_all(
    eager, conn_max_age_zero
):
    tenant = create_tenant("acme", "alice@example.com")[0]
    mesh = shop_with_clients(tenant)
    keys = callers(tenant, mesh)
    before = stored_versions(mesh)
    with redis.Redis.from_url(settings.REDIS_URL) as client, client.pubsub() as pubsub:
        pubsub.subscribe(settings.MESHPLANE_CONFIG_CHANNEL)
        pubsub.get_message(timeout=5)
        first, last = serve_change(keys, lambda: meshes.split(tenant, "shop", 50, 50))
        payloads = payloads_on_channel(pubsub)

    after = stored_versions(mesh)
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"frontend"} | {f"c{i}" for i in range(CLIENTS)}
    assert len(payloads) == 1, payloads
    batch = publish.decode(payloads[0])
    assert sorted(m["proxy"] for m in batch) == sorted(key.node_id for key in keys)
    assert len(json.loads(payloads[0])["groups"]) < len(batch)  # shared content goes once
    for key in keys:
        name = key.node_id.rsplit("/", 1)[1]
        assert last[key].version == after[name] != first[key].version


@needs_redis
def test_a_single_message_from_an_older_publisher_is_still_served(
    eager, conn_max_age_zero, monkeypatch
):
    tenant = create_tenant("acme", "alice@example.com")[0]
    mesh = shop_with_clients(tenant)
    keys = callers(tenant, mesh)
    held: list[publish.Group] = []
    monkeypatch.setattr(publish, "publish", held.extend)

    def change_then_publish_one_by_one():
        meshes.split(tenant, "shop", 50, 50)
        messages = publish.messages_of(held)
        assert len(messages) == len(keys)
        with redis.Redis.from_url(settings.REDIS_URL) as client:
            for message in messages:  # the format before batching: one bare message each
                client.publish(settings.MESHPLANE_CONFIG_CHANNEL, json.dumps(message))

    first, last = serve_change(keys, change_then_publish_one_by_one)
    after = stored_versions(mesh)
    for key in keys:
        name = key.node_id.rsplit("/", 1)[1]
        assert last[key].version == after[name] != first[key].version
