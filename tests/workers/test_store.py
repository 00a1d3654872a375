"""Storing a compile that reaches many proxies: exactly one new version per changed proxy,
each pointing at it, history bounded per proxy, `requires` rewritten only where the graph
moved, and the same result as a compile of each proxy on its own."""

import dataclasses

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from meshapi.models import ConfigManifest, Mesh, ProxyConfig, ProxyVersion
from meshapi.models.proxies import HISTORY_LIMIT
from meshapi.services import proxies as store
from meshapi.services import resources
from meshapi.services.kinds import VIRTUAL_NODE
from tenants.services import create_tenant
from tests.workers import meshes
from workers import loader, publish
from workers.compiler import ProxyRequest, compile_proxy

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = [f"client-{i:02d}" for i in range(12)]
CATALOG = {"backends": [{"virtualService": {"virtualServiceName": "catalog.shop.local"}}]}


@pytest.fixture
def mesh(embedded):
    tenant = create_tenant("acme", "alice@example.com")[0]
    mesh = meshes.shop(tenant)
    for name in CLIENTS:
        resources.create(
            tenant, VIRTUAL_NODE, meshes.WRITER, mesh_name="shop", name=name, spec=CATALOG
        )
    return mesh


def drain(subscription) -> list[dict]:
    out = []
    while (message := subscription.get(timeout=0.05)) is not None:
        out.append(message)
    return out


def reached(mesh) -> dict[str, ProxyConfig]:
    """The proxies a catalog route change reaches: frontend and the clients."""
    rows = ProxyConfig.objects.filter(mesh=mesh, name__in=["frontend", *CLIENTS])
    return {row.name: row for row in rows.select_related("current")}


def test_a_change_reaching_n_proxies_stores_n_versions_and_history_stays_bounded(mesh):
    tenant = mesh.tenant
    initial = {name: row.history.count() for name, row in reached(mesh).items()}
    others = ProxyConfig.objects.filter(mesh=mesh).exclude(name__in=list(initial))
    untouched = {row.name: (row.current_id, row.history.count()) for row in others}
    for i in range(HISTORY_LIMIT + 3):
        before = ProxyVersion.objects.filter(proxy__mesh=mesh).count()
        with publish.subscribe() as subscription:
            meshes.split(tenant, "shop", 10 + i, 90 - i)
            messages = drain(subscription)
        rows = reached(mesh)
        assert sorted(m["proxy"].rsplit("/", 1)[1] for m in messages) == sorted(rows)
        assert {m["version"] for m in messages} == {row.current.version for row in rows.values()}
        after = ProxyVersion.objects.filter(proxy__mesh=mesh).count()
        trimmed = sum(initial[name] + i + 1 > HISTORY_LIMIT for name in rows)
        assert after - before == len(rows) - trimmed
        revision = Mesh.objects.get(pk=mesh.pk).revision
        for name, row in rows.items():
            history = list(row.history.order_by("-id"))
            assert len(history) == min(initial[name] + i + 1, HISTORY_LIMIT)
            assert history[0].pk == row.current_id and row.revision == revision
    # The proxies the route does not reach kept their version and history.
    assert {row.name: (row.current_id, row.history.count()) for row in others} == untouched


def test_history_is_trimmed_after_the_publish_and_a_failed_trim_is_caught_up(mesh, monkeypatch):
    tenant = mesh.tenant
    for i in range(HISTORY_LIMIT):
        meshes.split(tenant, "shop", 10 + i, 90 - i)
    row = ProxyConfig.objects.get(mesh=mesh, name=CLIENTS[0])
    assert row.history.count() == HISTORY_LIMIT
    # When the publish goes out, the new version is stored and nothing is trimmed yet.
    at_publish = []
    real_publish = publish.publish

    def publishing(messages):
        at_publish.append(row.history.count())
        real_publish(messages)

    monkeypatch.setattr(publish, "publish", publishing)
    meshes.split(tenant, "shop", 50, 50)
    assert at_publish == [HISTORY_LIMIT + 1]
    assert row.history.count() == HISTORY_LIMIT
    # A trim that fails fails neither the compile nor its publish; the next one catches up.
    real_trim = store.trim_history

    def failing(proxy_ids):
        raise DatabaseError("connection lost")

    monkeypatch.setattr(store, "trim_history", failing)
    meshes.split(tenant, "shop", 40, 60)
    row.refresh_from_db()
    assert row.history.count() == HISTORY_LIMIT + 1
    assert row.history.first().pk == row.current_id and len(at_publish) == 2
    monkeypatch.setattr(store, "trim_history", real_trim)
    meshes.split(tenant, "shop", 30, 70)
    row.refresh_from_db()
    assert row.history.count() == HISTORY_LIMIT
    assert row.history.first().pk == row.current_id


def test_every_current_version_is_its_own_and_deletions_leave_no_version_behind(mesh):
    """`current` has no database constraint: what keeps it right is checked here."""
    tenant = mesh.tenant
    for i in range(3):
        meshes.split(tenant, "shop", 10 + i, 90 - i)
    gone = ProxyConfig.objects.get(mesh=mesh, name=CLIENTS[0])
    resources.delete(tenant, VIRTUAL_NODE, meshes.WRITER, mesh_name="shop", name=CLIENTS[0])
    assert not ProxyConfig.objects.filter(pk=gone.pk).exists()
    assert not ProxyVersion.objects.filter(proxy_id=gone.pk).exists()
    rows = ProxyConfig.objects.filter(mesh=mesh).select_related("current")
    assert rows and all(row.current.proxy_id == row.pk for row in rows)
    assert all(row.current_id == row.history.first().pk for row in rows)
    versions = list(ProxyVersion.objects.filter(proxy__mesh=mesh).values_list("pk", flat=True))
    Mesh.objects.filter(pk=mesh.pk).delete()
    assert not ProxyVersion.objects.filter(pk__in=versions).exists()
    assert not ProxyConfig.objects.filter(mesh_id=mesh.pk).exists()


def test_a_recompile_to_the_same_version_stores_its_new_warnings_and_metadata(mesh):
    row = ProxyConfig.objects.select_related("current").get(mesh=mesh, name=CLIENTS[0])
    loaded = loader.load(mesh.id)
    key = store.variant_key(row)
    snapshot = compile_proxy(loaded.ctx, ProxyRequest(*key[:4]))
    assert snapshot.version == row.current.version
    noted = dataclasses.replace(snapshot, warnings=("a warning",), metadata={"note": 1})
    versions = row.history.count()
    with transaction.atomic():
        changed, messages, _ = store.store(
            loaded,
            {key: (noted, frozenset(row.requires))},
            store.stored_variants(mesh.id),
            [],
            timezone.now(),
        )
    assert changed == [] and messages == []
    current = ProxyVersion.objects.get(pk=row.current_id)
    assert (current.warnings, current.metadata) == (["a warning"], {"note": 1})
    assert row.history.count() == versions


def test_versions_remembered_on_one_connection_are_not_trusted_on_the_next(mesh):
    if connection.vendor != "postgresql":
        pytest.skip("Django keeps an in-memory SQLite test database's one connection open")
    row = ProxyConfig.objects.select_related("current").get(mesh=mesh, name=CLIENTS[0])
    key = store.variant_key(row)
    assert store.stored_variants(mesh.id)[key].version == row.current.version
    store._VERSIONS[row.current_id] = "not-its-version"  # as if its pk were handed out again
    connection.close()  # a database restored or failed over comes with a new connection
    assert store.stored_variants(mesh.id)[key].version == row.current.version


def test_stored_requires_follow_the_graph_and_a_moved_proxy_leaves_the_route(mesh):
    tenant = mesh.tenant
    row = ProxyConfig.objects.get(mesh=mesh, name=CLIENTS[0])
    assert "route catalog/catalog-split" in row.requires
    resources.update(
        tenant,
        VIRTUAL_NODE,
        meshes.WRITER,
        mesh_name="shop",
        name=CLIENTS[0],
        spec={"backends": [{"virtualService": {"virtualServiceName": "frontend.shop.local"}}]},
    )
    row.refresh_from_db()
    assert "route catalog/catalog-split" not in row.requires
    assert "virtualService frontend.shop.local" in row.requires
    moved = row.current_id
    unchanged = ProxyConfig.objects.get(mesh=mesh, name=CLIENTS[1])
    meshes.split(tenant, "shop", 70, 30)
    row.refresh_from_db()
    assert row.current_id == moved  # the route no longer reaches it
    assert ProxyConfig.objects.get(pk=unchanged.pk).current_id != unchanged.current_id


def test_stored_versions_are_what_each_proxy_compiles_to_on_its_own(mesh):
    meshes.split(mesh.tenant, "shop", 30, 70)
    for key, row in store.stored_variants(mesh.id).items():
        kind, name, consumer, interception = key[:4]
        alone = loader.load(mesh.id).ctx  # a fresh context: nothing shared with others
        snapshot = compile_proxy(alone, ProxyRequest(kind, name, consumer, interception))
        assert row.version == snapshot.version, key


def test_versions_of_a_compile_rolled_back_are_not_remembered(mesh, monkeypatch):
    """A worker remembers the versions it stored only once they are committed: SQLite
    hands a rolled-back pk out again, to what may be another version."""
    stored: list[int] = []
    real_store = store.store

    def store_then_fail(*args, **kwargs):
        result = real_store(*args, **kwargs)
        stored.extend(row[3] for group in result.groups for row in group.rows)
        raise DatabaseError("the compile fails after storing")

    monkeypatch.setattr(store, "store", store_then_fail)
    meshes.split(mesh.tenant, "shop", 30, 70)  # compiled in-process as it commits: fails
    assert stored, "the compile stored versions before failing"
    assert not ProxyVersion.objects.filter(pk__in=stored).exists()
    assert not set(stored) & set(store._VERSIONS)


def test_a_version_shared_by_many_proxies_stores_its_manifest_once(mesh):
    """The clients of one backend compile to one version: one manifest for the mesh, which
    every version row of it refers to, holding what the proxies compile to."""
    manifests = ConfigManifest.objects.filter(mesh=mesh).count()
    meshes.split(mesh.tenant, "shop", 30, 70)
    rows = reached(mesh)
    new_versions = {row.current.version for row in rows.values()}
    assert len(rows) > len(new_versions)  # several proxies share a version
    assert ConfigManifest.objects.filter(mesh=mesh).count() == manifests + len(new_versions)
    versions = ProxyVersion.objects.filter(proxy__mesh=mesh).select_related("manifest")
    assert {(v.manifest.mesh_id, v.manifest.version) for v in versions} == {
        (mesh.id, v.version) for v in versions
    }
    loaded = loader.load(mesh.id)
    for row in rows.values():
        snapshot = compile_proxy(loaded.ctx, ProxyRequest(*store.variant_key(row)[:4]))
        current = ProxyVersion.objects.select_related("manifest").get(pk=row.current_id)
        assert current.type_versions == dict(snapshot.type_versions)
        assert current.resources == {t: dict(h) for t, h in snapshot.hashes.items() if h}


def test_meshes_with_the_same_version_keep_manifests_of_their_own(embedded):
    """Two tenants' identical meshes compile to the same versions; each mesh has its own
    manifests, so pruning or deleting one never touches the other's."""
    first = meshes.shop(create_tenant("acme", "alice@example.com")[0])
    second = meshes.shop(create_tenant("other", "charlie@example.com")[0])
    ours = dict(ConfigManifest.objects.filter(mesh=first).values_list("version", "id"))
    theirs = dict(ConfigManifest.objects.filter(mesh=second).values_list("version", "id"))
    assert ours.keys() == theirs.keys() and not set(ours.values()) & set(theirs.values())
    first.delete()
    assert not ConfigManifest.objects.filter(pk__in=ours.values()).exists()
    assert ConfigManifest.objects.filter(pk__in=theirs.values()).count() == len(theirs)
    for version in ProxyVersion.objects.filter(proxy__mesh=second):
        assert version.manifest_id in theirs.values()
