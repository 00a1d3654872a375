"""The compile pipeline in-process, on the test database: writes compile after commit,
only changed versions are stored and published, endpoint churn touches EDS only, history
stays bounded, and concurrent compiles never move anything backwards."""

import threading

import pytest
from django.db import connection
from django.db.models import F

from meshapi.models import (
    CompileState,
    ConfigManifest,
    ConfigResource,
    Mesh,
    ProxyConfig,
    ProxyVersion,
)
from meshapi.models.proxies import HISTORY_LIMIT
from meshapi.services import endpoints as endpoint_service
from meshapi.services import proxies as store
from meshapi.services import resources
from meshapi.services.kinds import GATEWAY_ROUTE, VIRTUAL_GATEWAY, VIRTUAL_NODE, VIRTUAL_SERVICE
from tenants.services import create_tenant
from tests.workers import meshes
from workers import loader, publish
from workers.celery import app
from workers.compiler import ProxyRequest, compile_proxy, xds
from workers.pipeline import run_compile
from workers.tasks.reconcile import reconcile_meshes

pytestmark = pytest.mark.django_db(transaction=True)

FRONTEND = ("virtualNode", "frontend", "envoy", "redirect", 0, 0, 0)
CATALOG_V1 = ("virtualNode", "catalog-v1", "envoy", "redirect", 0, 0, 0)
GATEWAY = ("virtualGateway", "shop-gateway", "envoy", "redirect", 0, 0, 0)


@pytest.fixture
def tenant():
    return create_tenant("acme", "alice@example.com")[0]


def versions(mesh: Mesh) -> dict[tuple, str]:
    return {
        key: row.current.version
        for key, row in store.stored_configs(mesh.id).items()
        if row.current
    }


def drain(subscription) -> list[dict]:
    out = []
    while (message := subscription.get(timeout=0.05)) is not None:
        out.append(message)
    return out


def test_loader_reads_a_mesh_in_the_same_few_queries_whatever_its_size(
    tenant, embedded, django_assert_num_queries
):
    mesh = meshes.shop(tenant, eds=True)
    with django_assert_num_queries(4):
        small = loader.load(mesh.id)
    for i in range(12):
        spec = {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}
        resources.create(
            tenant, VIRTUAL_NODE, meshes.WRITER, mesh_name="shop", name=f"n{i}", spec=spec
        )
        provider = {"provider": {"virtualNode": {"virtualNodeName": f"n{i}"}}}
        resources.create(
            tenant,
            VIRTUAL_SERVICE,
            meshes.WRITER,
            mesh_name="shop",
            name=f"s{i}.local",
            spec=provider,
        )
        endpoint_service.add_static(
            tenant,
            meshes.WRITER,
            mesh_name="shop",
            node_name=f"n{i}",
            port=8080,
            address=f"10.0.0.{i}",
        )
    with django_assert_num_queries(4):
        big = loader.load(mesh.id)
    assert len(big.ctx.virtual_nodes) == len(small.ctx.virtual_nodes) + 12
    assert big.ctx.endpoints_of("n3", 8080)[0].address == "10.0.0.3"
    assert big.revision == Mesh.objects.get(pk=mesh.id).revision


def test_writes_compile_after_commit_and_unchanged_input_stores_and_publishes_nothing(
    tenant, embedded
):
    mesh = meshes.shop(tenant)
    mesh.refresh_from_db()
    assert mesh.compiled_revision == mesh.revision
    before = versions(mesh)
    assert set(before) == {
        FRONTEND,
        CATALOG_V1,
        ("virtualNode", "catalog-v2", "envoy", "redirect", 0, 0, 0),
        GATEWAY,
    }
    stored = ProxyVersion.objects.count()
    resources_stored = ConfigResource.objects.count()
    with publish.subscribe() as subscription:
        result = run_compile(mesh.id, full=True)
        assert result.full and len(result.compiled) == 4 and result.changed == []
        assert drain(subscription) == []
    assert versions(mesh) == before
    assert ProxyVersion.objects.count() == stored
    assert ConfigResource.objects.count() == resources_stored
    # Nothing new since: the next compile does not even load the mesh.
    assert run_compile(mesh.id).skipped == "up to date"


def test_a_route_change_gives_a_new_version_to_exactly_its_dependents(tenant, embedded):
    mesh = meshes.shop(tenant)
    before = versions(mesh)
    with publish.subscribe() as subscription:
        meshes.split(tenant, "shop", 50, 50)
        messages = drain(subscription)
    after = versions(mesh)
    changed = {key for key in after if after[key] != before[key]}
    assert changed == {FRONTEND}  # the gateway reaches frontend, not the catalog router
    (message,) = messages
    mesh.refresh_from_db()
    current = store.stored_configs(mesh.id)[FRONTEND].current
    assert message == {
        "tenant": tenant.account_id,
        "mesh": "shop",
        "meshUid": str(mesh.uid),
        "proxy": "mesh/shop/virtualNode/frontend",
        "consumer": "envoy",
        "interception": "redirect",
        "version": after[FRONTEND],
        "revision": mesh.revision,
        # What a replica needs to serve it without reading the variant back.
        "meshId": mesh.id,
        "seq": current.pk,
        "types": [current.type_versions[t] for t in xds.TYPE_ORDER],
    }
    state = CompileState.objects.get(mesh=mesh)
    assert not state.full and state.proxies_compiled == 1 and state.proxies_changed == 1


def test_endpoint_churn_rebuilds_only_cluster_load_assignments(tenant, embedded):
    mesh = meshes.shop(tenant, eds=True)
    frontend = store.stored_configs(mesh.id)[FRONTEND]
    old = ProxyVersion.objects.get(pk=frontend.current_id)
    resources_before = set(ConfigResource.objects.values_list("type_url", "digest"))
    endpoint = endpoint_service.add_static(
        tenant,
        meshes.WRITER,
        mesh_name="shop",
        node_name="catalog-v1",
        port=8080,
        address="10.1.0.7",
    )
    frontend = store.stored_configs(mesh.id)[FRONTEND]
    new = ProxyVersion.objects.get(pk=frontend.current_id)
    assert new.version != old.version
    differing = {t for t in xds.TYPE_ORDER if old.type_versions[t] != new.type_versions[t]}
    assert differing == {xds.ENDPOINT}
    added = set(ConfigResource.objects.values_list("type_url", "digest")) - resources_before
    assert {t for t, _ in added} == {xds.ENDPOINT}
    config = store.resources_json(mesh.id, new)
    (cla,) = [c for c in config["endpoints"] if "catalog-v1" in c["cluster_name"]]
    lb = cla["endpoints"][0]["lb_endpoints"][0]
    assert lb["endpoint"]["address"]["socket_address"] == {
        "address": "10.1.0.7",
        "port_value": 8080,
    }
    # The callee itself and the gateway do not reach catalog-v1's endpoints.
    assert (
        versions(mesh)[CATALOG_V1]
        == ProxyVersion.objects.get(proxy__name="catalog-v1", proxy__consumer="envoy").version
    )
    endpoint_service.remove_static(
        tenant, meshes.WRITER, mesh_name="shop", node_name="catalog-v1", endpoint_id=endpoint.pk
    )
    assert versions(mesh)[FRONTEND] == old.version  # content-hashed: back to the first version


def test_history_is_bounded_and_two_versions_diff_readably(tenant, embedded):
    mesh = meshes.shop(tenant)
    for i in range(HISTORY_LIMIT + 5):
        meshes.split(tenant, "shop", 10 + i, 90 - i)
    row = store.stored_configs(mesh.id)[FRONTEND]
    history = list(row.history.all())
    assert len(history) == HISTORY_LIMIT
    assert history[0].pk == row.current_id
    row.mesh = mesh
    text = store.unified_diff(row, history[1], history[0])
    assert text.startswith("--- mesh/shop/virtualNode/frontend@" + history[1].version)
    changed = [" ".join(line.split()) for line in text.splitlines()[2:] if line[:1] in "+-"]
    assert changed == [
        '- "weight": 33',
        '+ "weight": 34',
        '- "weight": 67',
        '+ "weight": 66',
    ], text


def test_a_deleted_gateway_loses_its_configuration(tenant, embedded):
    mesh = meshes.shop(tenant)
    with publish.subscribe() as subscription:
        resources.delete(
            tenant,
            GATEWAY_ROUTE,
            meshes.WRITER,
            mesh_name="shop",
            name="to-frontend",
            parent_name="shop-gateway",
        )
        resources.delete(
            tenant, VIRTUAL_GATEWAY, meshes.WRITER, mesh_name="shop", name="shop-gateway"
        )
        messages = drain(subscription)
    assert GATEWAY not in versions(mesh)
    assert messages[-1]["proxy"] == "mesh/shop/virtualGateway/shop-gateway"
    assert messages[-1]["version"] is None


def test_a_variant_asked_for_is_compiled_and_kept_compiled(tenant, embedded):
    mesh = meshes.shop(tenant)
    ref = store.find_proxy(tenant, "shop", "virtualNode", "frontend")
    assert store.request_variant(ref, "grpc", "explicit")
    assert not store.request_variant(ref, "grpc", "explicit")
    result = run_compile(mesh.id)
    grpc = ("virtualNode", "frontend", "grpc", "explicit", 0, 0, 0)
    assert result.compiled == [grpc] and not result.full
    first = versions(mesh)[grpc]
    ctx = loader.load(mesh.id).ctx
    assert first == compile_proxy(ctx, ProxyRequest(*grpc[:4])).version
    meshes.split(tenant, "shop", 70, 30)
    assert versions(mesh)[grpc] != first


def test_reconciler_compiles_meshes_that_lag(tenant, embedded):
    mesh = meshes.shop(tenant)
    Mesh.objects.filter(pk=mesh.pk).update(revision=F("revision") + 3)  # enqueues lost
    assert reconcile_meshes.apply().get() == [mesh.pk]
    mesh.refresh_from_db()
    assert mesh.compiled_revision == mesh.revision
    assert reconcile_meshes.apply().get() == []


def test_a_failed_enqueue_is_logged_and_the_write_stands(tenant, embedded, monkeypatch, caplog):
    from kombu.exceptions import OperationalError

    from workers.tasks import compile as compile_tasks

    mesh = meshes.shop(tenant)

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(compile_tasks.compile_mesh, "apply_async", broker_down)
    meshes.split(tenant, "shop", 1, 99)
    mesh.refresh_from_db()
    assert mesh.compiled_revision < mesh.revision
    assert "could not enqueue compile_mesh" in caplog.text


def test_an_older_compile_never_overwrites_a_newer_one(tenant, embedded):
    mesh = meshes.shop(tenant)
    stale = loader.load(mesh.id)  # what a slow compile read
    meshes.split(tenant, "shop", 60, 40)
    mesh.refresh_from_db()
    newest = versions(mesh)
    assert stale.revision < mesh.compiled_revision
    # The slow compile finishes now, with snapshots of what it read.
    snapshots = {
        FRONTEND: (
            compile_proxy(stale.ctx, ProxyRequest(*FRONTEND[:4])),
            frozenset({"mesh shop"}),
        )
    }
    from django.db import transaction
    from django.utils import timezone

    from workers.pipeline import CompileResult

    with transaction.atomic():
        state = store.lock_compile_state(mesh.id)
        changed, messages, _ = store.store(
            stale, snapshots, store.stored_variants(mesh.id), [], timezone.now()
        )
        store.record_compiled(state, stale, CompileResult(mesh.id))
    assert changed == [] and messages == []
    mesh.refresh_from_db()
    assert mesh.compiled_revision == mesh.revision
    assert versions(mesh) == newest
    state = CompileState.objects.get(mesh=mesh)
    assert state.revision == mesh.revision
    assert state.inputs == loader.load(mesh.id).fingerprint


def test_concurrent_compiles_of_one_mesh_never_regress(tenant):
    """Real worker concurrency: writers and three compilers at once on PostgreSQL."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks")
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        mesh = meshes.shop(tenant)
        run_compile(mesh.id)
        stop = threading.Event()
        errors: list[BaseException] = []
        seen: list[tuple[int, dict]] = []
        compiled: list[int] = []

        def compiler():
            try:
                while not stop.is_set():
                    if not run_compile(mesh.id).skipped:
                        compiled.append(1)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                connection.close()

        def watcher():
            try:
                while not stop.is_set():
                    compiled = Mesh.objects.get(pk=mesh.id).compiled_revision
                    rows = dict(
                        ProxyConfig.objects.filter(mesh_id=mesh.id).values_list("name", "revision")
                    )
                    seen.append((compiled, rows))
            finally:
                connection.close()

        threads = [threading.Thread(target=compiler) for _ in range(3)]
        threads.append(threading.Thread(target=watcher))
        for t in threads:
            t.start()
        for i in range(15):
            meshes.split(tenant, "shop", 1 + i, 99 - i)
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert len(compiled) >= 3, "the compilers never raced the writers"
        for (a, rows_a), (b, rows_b) in zip(seen, seen[1:], strict=False):
            assert b >= a
            assert all(rows_b.get(n, r) >= r for n, r in rows_a.items())
        run_compile(mesh.id)
        mesh.refresh_from_db()
        assert mesh.compiled_revision == mesh.revision
        ctx = loader.load(mesh.id).ctx
        assert versions(mesh)[FRONTEND] == compile_proxy(ctx, ProxyRequest(*FRONTEND[:4])).version
    finally:
        app.conf.task_always_eager = eager


def test_pruning_drops_versions_left_without_their_variant(tenant, embedded):
    """ProxyVersion.proxy has no database constraint: a variant removed while a compile of
    its mesh commits leaves versions behind (simulated here by deleting a variant's row
    in SQL). The hourly prune deletes them, and nothing else."""
    from django.db import connection as db

    from workers.tasks.compile import prune_config_resources

    meshes.shop(tenant)
    meshes.split(tenant, "shop", 20, 80)
    gone = ProxyConfig.objects.filter(mesh__tenant=tenant).order_by("pk").first()
    left = set(ProxyVersion.objects.filter(proxy_id=gone.pk).values_list("pk", flat=True))
    others = set(ProxyVersion.objects.exclude(proxy_id=gone.pk).values_list("pk", flat=True))
    assert left and others
    with db.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {ProxyConfig._meta.db_table} WHERE id = %s",  # noqa: S608
            [gone.pk],
        )
    assert set(ProxyVersion.objects.values_list("pk", flat=True)) == left | others
    prune_config_resources.apply().get()
    assert set(ProxyVersion.objects.values_list("pk", flat=True)) == others


def test_pruning_drops_only_resources_no_kept_version_uses(tenant, embedded):
    from workers.tasks.compile import prune_config_resources

    mesh = meshes.shop(tenant)
    for i in range(HISTORY_LIMIT + 3):
        meshes.split(tenant, "shop", 10 + i, 90 - i)
    kept = {
        (type_url, digest)
        for manifest in ProxyVersion.objects.values_list("manifest__resources", flat=True)
        for type_url, hashes in manifest.items()
        for digest in hashes.values()
    }
    used = set(ProxyVersion.objects.values_list("manifest_id", flat=True))
    assert set(ConfigManifest.objects.values_list("pk", flat=True)) > used  # trimmed versions'
    stored = set(ConfigResource.objects.values_list("type_url", "digest"))
    assert stored > kept  # versions beyond the last 20 left resources behind
    assert prune_config_resources.apply().get() == len(stored - kept)
    assert set(ConfigResource.objects.values_list("type_url", "digest")) == kept
    assert set(ConfigManifest.objects.values_list("pk", flat=True)) == used
    assert prune_config_resources.apply().get() == 0
    # Every kept version still renders completely.
    for version in ProxyVersion.objects.filter(proxy__mesh=mesh):
        rendered = store.resources_json(mesh.id, version)
        assert sum(map(len, rendered.values())) == sum(map(len, version.resources.values()))


def test_a_snapshot_failing_its_consistency_check_keeps_the_last_configuration(
    tenant, embedded, monkeypatch, caplog
):
    from workers import pipeline
    from workers.compiler import InconsistentSnapshot

    mesh = meshes.shop(tenant)
    before = versions(mesh)
    real = pipeline.compile_proxy

    def broken(ctx, proxy):
        snapshot = real(ctx, proxy)
        if proxy.name == "frontend":
            raise InconsistentSnapshot(snapshot.node_id, ["route uses a missing cluster"])
        return snapshot

    monkeypatch.setattr(pipeline, "compile_proxy", broken)
    meshes.split(tenant, "shop", 20, 80)
    assert versions(mesh) == before
    mesh.refresh_from_db()
    assert mesh.compiled_revision == mesh.revision
    assert f"compiling {FRONTEND} failed" in caplog.text
