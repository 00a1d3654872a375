"""The replica's cache on a real database: stored snapshots loaded in batches, every
resource encoded once and shared by every proxy using it, and kept current by the
publish (here the in-process pub/sub of the embedded mode)."""

import asyncio

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from meshapi.services import proxies as store
from tenants.services import create_tenant
from tests.workers import meshes
from workers.compiler import xds
from workers.xds.cache import CacheRefresher, ConfigCache, Key

pytestmark = pytest.mark.django_db(transaction=True)


def keys_of(tenant, mesh) -> list[Key]:
    return [
        Key(tenant.account_id, f"mesh/{mesh.name}/{kind}/{name}", *variant)
        for (kind, name, *variant) in store.stored_configs(mesh.id)
    ]


def test_resources_are_encoded_once_and_shared_by_every_proxy(embedded):
    tenant = create_tenant("acme", "alice@example.com")[0]
    mesh = meshes.shop(tenant, eds=True)
    keys = keys_of(tenant, mesh)
    cache = ConfigCache()
    entries = {e.key: e for e in cache.load_many(keys)}
    assert len(entries) == len(keys) >= 4 and all(e.version for e in entries.values())

    configs = store.stored_configs(mesh.id)
    seen: dict[tuple, object] = {}
    shared = 0
    for entry in entries.values():
        key = entry.key
        stored = configs[(key.kind, key.name, *key[2:])].current
        assert entry.version == stored.version and entry.type_versions == stored.type_versions
        for type_url, bucket in entry.resources.items():
            assert {n: r.digest for n, r in bucket.items()} == stored.resources[type_url]
            for name, resource in bucket.items():
                ident = (type_url, name, resource.digest)
                if ident in seen:
                    assert seen[ident] is resource  # the same bytes, not a copy
                    shared += 1
                seen[ident] = resource
    assert shared, "the sample mesh has resources used by several proxies"

    # What a stream sends decodes to the stored messages.
    entry = next(iter(entries.values()))
    clusters = entry.of(xds.CLUSTER)
    raw = b"".join(r.sotw for r in clusters.values())
    response = discovery_pb2.DiscoveryResponse.FromString(raw)
    assert [a.type_url for a in response.resources] == [xds.CLUSTER] * len(clusters)
    # Loading again reuses what is encoded (nothing new to encode).
    again = {e.key: e for e in cache.load_many(keys)}
    for key, entry in entries.items():
        for type_url, bucket in entry.resources.items():
            for name, resource in bucket.items():
                assert again[key].resources[type_url][name] is resource


def _split(tenant, mesh_name: str) -> None:
    from django.db import connections

    try:
        meshes.split(tenant, mesh_name, 50, 50)
    finally:
        connections.close_all()  # this worker thread's connection


def test_a_published_version_reaches_a_watcher(embedded, monkeypatch):
    from django.db import connections

    # The cache's loading threads close their connections after each load (as serve_xds
    # does with MESHPLANE_DB_CONN_MAX_AGE=0), so none outlives the test.
    monkeypatch.setitem(connections.databases["default"], "CONN_MAX_AGE", 0)
    tenant = create_tenant("acme", "alice@example.com")[0]
    mesh = meshes.shop(tenant, eds=True)
    frontend = Key(tenant.account_id, f"mesh/{mesh.name}/virtualNode/frontend", "envoy", "redirect")

    async def scenario():
        cache = ConfigCache()
        updates: asyncio.Queue = asyncio.Queue()
        first = await cache.watch(frontend, updates.put_nowait)
        refresher = CacheRefresher(cache, poll_seconds=3600)
        refresher.start()
        try:
            await asyncio.to_thread(refresher.subscribed.wait, 10)
            await asyncio.to_thread(_split, tenant, mesh.name)
            update = first  # the watch itself tells the watcher what it loaded
            while update.version == first.version:
                update = await asyncio.wait_for(updates.get(), timeout=20)
        finally:
            await asyncio.to_thread(refresher.stop)
        return first, update

    first, update = asyncio.run(scenario())
    stored = store.stored_configs(mesh.id)[
        ("virtualNode", "frontend", "envoy", "redirect", 0, 0, 0)
    ]
    assert update.version == stored.current.version != first.version
    assert update.type_versions[xds.ROUTE] != first.type_versions[xds.ROUTE]
    assert update.type_versions[xds.CLUSTER] == first.type_versions[xds.CLUSTER]


def test_many_variants_of_one_content_load_as_one_shared_config(embedded):
    """Past ten proxy names the variants are read by the replica's own prepared statement;
    proxies whose stored configurations are the same share one Config, also across loads."""
    from meshapi.models import Mesh
    from meshapi.services import resources
    from meshapi.services.kinds import MESH, VIRTUAL_NODE, VIRTUAL_SERVICE

    tenant = create_tenant("acme", "alice@example.com")[0]
    writer = resources.Writer(actor="test")
    http = {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}
    resources.create(tenant, MESH, writer, mesh_name="many", name="many", spec=None)
    resources.create(tenant, VIRTUAL_NODE, writer, mesh_name="many", name="api", spec=http)
    provider = {"provider": {"virtualNode": {"virtualNodeName": "api"}}}
    resources.create(
        tenant, VIRTUAL_SERVICE, writer, mesh_name="many", name="api.local", spec=provider
    )
    backends = {"backends": [{"virtualService": {"virtualServiceName": "api.local"}}]}
    clients = [f"c{i:02d}" for i in range(14)]
    for name in clients:
        resources.create(tenant, VIRTUAL_NODE, writer, mesh_name="many", name=name, spec=backends)
    mesh = Mesh.objects.get(tenant=tenant, name="many")
    keys = keys_of(tenant, mesh)
    assert len(keys) == len(clients) + 1
    cache = ConfigCache()
    entries = {e.key: e for e in cache.load_many(keys)}

    configs = store.stored_configs(mesh.id)
    for key, entry in entries.items():
        stored = configs[(key.kind, key.name, *key[2:])].current
        assert entry.version == stored.version and entry.type_versions == stored.type_versions
        for type_url, names in stored.resources.items():
            assert {n: r.digest for n, r in entry.of(type_url).items()} == names
    shared = {id(entries[k].config) for k in keys if k.name in clients}
    assert len(shared) == 1
    again = cache.load_many([k for k in keys if k.name in clients])
    assert {id(e.config) for e in again} == shared


def test_a_published_version_is_taken_from_the_message_and_falls_back_to_the_database(
    embedded,
):
    """A compile's messages carry each new version's row id and type versions: the replica
    builds the entries from them, equal to what it would read. A message without them, a
    proxy gone, and a version whose manifest left the history are read from the database."""
    from workers import publish

    tenant = create_tenant("acme", "alice@example.com")[0]
    mesh = meshes.shop(tenant, eds=True)
    keys = keys_of(tenant, mesh)
    cache = ConfigCache()
    cache.entries = {e.key: e for e in cache.load_many(keys)}
    with publish.subscribe() as subscription:
        meshes.split(tenant, mesh.name, 20, 80)
        messages = subscription.get_many(timeout=20)
    published = {
        Key(m["tenant"], m["proxy"], m["consumer"], m["interception"]): m for m in messages
    }
    assert published and set(published) <= set(keys)
    assert all(isinstance(m["seq"], int) and len(m["types"]) == 5 for m in published.values())

    entries, rest = cache.published(as_groups(published))
    assert rest == []
    read = {e.key: e for e in ConfigCache().load_many(list(published))}
    assert {key for key, _ in entries} == set(published)
    for key, entry in entries:
        stored = read[key]
        assert (entry.version, entry.seq) == (stored.version, stored.seq)
        assert entry.type_versions == stored.type_versions
        assert digests(entry) == digests(stored)

    # As the refresher reads them: proxies published with one version share one entry,
    # ordered by the lowest of their seqs (a later compile's are all higher).
    groups = [
        (common, [(Key(common["tenant"], row[0], row[1], row[2]), row[3]) for row in rows])
        for common, rows in publish.group(published.values())
    ]
    shared, rest = cache.published(groups)
    assert rest == [] and {key for key, _ in shared} == set(published)
    by_version: dict[str, set[int]] = {}
    for key, entry in shared:
        assert entry.version == read[key].version and digests(entry) == digests(read[key])
        assert entry.seq <= read[key].seq
        by_version.setdefault(entry.version, set()).add(id(entry))
    assert all(len(ids) == 1 for ids in by_version.values())

    key, message = next(iter(published.items()))
    older = {k: v for k, v in message.items() if k not in ("seq", "types", "meshId")}
    gone = {**message, "version": None}
    trimmed = {**message, "seq": 2**40, "types": [f"unseen-{i}" for i in range(5)]}
    for odd in (older, gone, trimmed):
        assert cache.published(as_groups({key: odd})) == ([], [key])
    # The missing manifest marked nothing as empty: the same content still loads whole.
    again = cache.load_many([key])[0]
    assert again.version == read[key].version and digests(again) == digests(read[key])


def as_groups(messages: dict) -> list:
    """What the refresher hands `published`: per message, (its fields, [(key, seq)])."""
    return [(message, [(key, message.get("seq"))]) for key, message in messages.items()]


def digests(entry) -> dict[str, dict[str, str]]:
    return {t: {n: r.digest for n, r in entry.of(t).items()} for t in xds.TYPE_ORDER}
