"""Variants nobody uses any more are dropped by the next compile: a variant other than the
default whose proxy has no instance using it (connected, or disconnected less than
MESHPLANE_VARIANT_TTL_SECONDS ago) and that was asked for longer ago than that. Asked for
again, it is compiled again, also when the asking races the compile dropping it."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from meshapi.models import Mesh, ProxyConfig, ProxyInstance
from meshapi.services import proxies as store
from tenants.services import create_tenant
from tests.workers import meshes
from workers import publish
from workers.pipeline import run_compile
from workers.tasks.reconcile import reconcile_meshes

pytestmark = pytest.mark.django_db(transaction=True)

TTL = 600
PORTS = (20001, 20002, 20003)
EXPLICIT = ("virtualNode", "frontend", "envoy", "explicit", *PORTS)
GRPC = ("virtualNode", "frontend", "grpc", "redirect", 0, 0, 0)
DEFAULT = ("virtualNode", "frontend", "envoy", "redirect", 0, 0, 0)
PROXY = "mesh/shop/virtualNode/frontend"


@pytest.fixture
def tenant():
    return create_tenant("acme", "alice@example.com")[0]


@pytest.fixture
def ttl(settings):
    settings.MESHPLANE_VARIANT_TTL_SECONDS = TTL
    settings.MESHPLANE_VARIANT_CHECK_SECONDS = 0  # every compile looks


def ref(tenant) -> store.ProxyRef:
    return store.find_proxy(tenant, "shop", "virtualNode", "frontend")


def versions(mesh: Mesh) -> dict[tuple, str | None]:
    return {
        key: row.current.version if row.current else None
        for key, row in store.stored_configs(mesh.id).items()
    }


def ask(tenant, mesh: Mesh, key: tuple) -> None:
    """Ask for a variant and compile it, as a proxy connecting with it does."""
    assert store.request_variant(ref(tenant), key[2], key[3], key[4:])
    run_compile(mesh.id)
    assert versions(mesh)[key] is not None


def age(mesh: Mesh, key: tuple, seconds: float) -> None:
    """Make a variant look asked for `seconds` ago."""
    when = timezone.now() - timedelta(seconds=seconds)
    fields = dict(zip(("kind", "name", "consumer", "interception"), key[:4], strict=True))
    ports = dict(zip(("app_port", "ingress_port", "egress_port"), key[4:], strict=True))
    ProxyConfig.objects.filter(mesh=mesh, **fields, **ports).update(requested_at=when)


def instance(tenant, mesh: Mesh, key: tuple, disconnected_ago: float | None = None) -> None:
    """An instance of the proxy declaring `key`: connected, or disconnected that long ago."""
    now = timezone.now()
    ProxyInstance.objects.create(
        tenant=tenant,
        mesh=mesh,
        kind=key[0],
        name=key[1],
        instance_id=f"i-{len(key[2])}-{key[4]}",
        consumer=key[2],
        interception=key[3],
        app_port=key[4],
        ingress_port=key[5],
        egress_port=key[6],
        connected_since=now - timedelta(days=3),
        disconnected_at=None
        if disconnected_ago is None
        else now - timedelta(seconds=disconnected_ago),
    )


def change(tenant, mesh: Mesh, i: int = 0) -> list[dict]:
    """A change to the mesh (compiled as it commits); what was published."""
    with publish.subscribe() as subscription:
        meshes.split(tenant, "shop", 80 - i, 20 + i)
        out = []
        while (message := subscription.get(timeout=0.05)) is not None:
            out.append(message)
    return out


def null_versions(messages: list[dict]) -> list[tuple]:
    return [
        (m["proxy"], m["consumer"], m["interception"], m.get("appPort", 0))
        for m in messages
        if m["version"] is None
    ]


def test_an_unused_variant_is_dropped_by_the_next_compile(tenant, embedded, ttl):
    mesh = meshes.shop(tenant)
    ask(tenant, mesh, EXPLICIT)
    ask(tenant, mesh, GRPC)
    # Used once, by an instance that went away longer ago than the TTL.
    instance(tenant, mesh, EXPLICIT, disconnected_ago=2 * TTL)
    age(mesh, EXPLICIT, 2 * TTL)
    age(mesh, GRPC, 2 * TTL)
    age(mesh, DEFAULT, 2 * TTL)
    messages = change(tenant, mesh)
    stored = versions(mesh)
    assert EXPLICIT not in stored and GRPC not in stored
    assert stored[DEFAULT] is not None  # the default variant is never dropped
    assert sorted(null_versions(messages)) == [
        (PROXY, "envoy", "explicit", PORTS[0]),
        (PROXY, "grpc", "redirect", 0),
    ]
    assert null_versions(change(tenant, mesh, 1)) == []


def test_a_variant_in_use_or_asked_for_recently_is_kept(tenant, embedded, ttl):
    mesh = meshes.shop(tenant)
    connected = ("virtualNode", "frontend", "envoy", "explicit", 21001, 21002, 21003)
    recent = ("virtualNode", "frontend", "envoy", "explicit", 22001, 22002, 22003)
    other_ports = ("virtualNode", "frontend", "envoy", "explicit", 23001, 23002, 23003)
    for key in (connected, recent, GRPC, other_ports):
        ask(tenant, mesh, key)
    for key in (connected, recent, GRPC, other_ports):
        age(mesh, key, 2 * TTL)
    instance(tenant, mesh, connected)
    instance(tenant, mesh, recent, disconnected_ago=TTL / 2)
    age(mesh, GRPC, TTL / 2)  # asked for recently, nothing connected yet
    # An instance of the same proxy on other ports keeps only its own variant.
    before = versions(mesh)
    messages = change(tenant, mesh)
    stored = versions(mesh)
    assert other_ports not in stored
    for key in (connected, recent, GRPC, DEFAULT):
        assert stored[key] is not None and stored[key] != before[key]  # and still compiled
    assert null_versions(messages) == [(PROXY, "envoy", "explicit", 23001)]


def test_a_dropped_variant_asked_for_again_is_compiled_again(tenant, embedded, ttl):
    mesh = meshes.shop(tenant)
    ask(tenant, mesh, EXPLICIT)
    age(mesh, EXPLICIT, 2 * TTL)
    change(tenant, mesh)
    assert EXPLICIT not in versions(mesh)
    assert store.request_variant(ref(tenant), "envoy", "explicit", PORTS)
    messages = [m for m in change(tenant, mesh, 1) if m.get("appPort") == PORTS[0]]
    assert [m["version"] for m in messages] == [versions(mesh)[EXPLICIT]]
    assert messages[0]["version"] is not None


def test_asking_again_renews_a_variant_so_the_compile_keeps_it(tenant, embedded, ttl):
    mesh = meshes.shop(tenant)
    ask(tenant, mesh, EXPLICIT)
    age(mesh, EXPLICIT, 2 * TTL)
    # A proxy connecting with it (its instance not recorded yet) asks for it again.
    assert not store.request_variant(ref(tenant), "envoy", "explicit", PORTS)
    before = versions(mesh)[EXPLICIT]
    change(tenant, mesh)
    assert versions(mesh)[EXPLICIT] not in (None, before)


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _wait_until_waiting(pid: int) -> None:
    """Until the backend `pid` waits for a lock (a bounded wait, not a timing assertion)."""
    for _ in range(3000):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", [pid])
            if cursor.fetchone()[0]:
                return
        threading.Event().wait(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


def test_a_proxy_asking_while_the_compile_drops_its_variant_gets_it_compiled(tenant, embedded, ttl):
    """The compile has dropped the variant (row locked and deleted, not committed) when a
    proxy connecting with it asks for it: the ask waits for the commit, then creates the
    variant again, and it is compiled as a variant asked for but never compiled."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks")
    mesh = meshes.shop(tenant)
    ask(tenant, mesh, EXPLICIT)
    age(mesh, EXPLICIT, 2 * TTL)
    Mesh.objects.filter(pk=mesh.pk).update(revision=F("revision") + 1)  # a change to compile
    pids: dict[str, int] = {}
    results: dict[str, object] = {}
    errors: list[BaseException] = []

    def run(name, work):
        try:
            pids[name] = _backend_pid()
            results[name] = work()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    compiler = threading.Thread(target=run, args=("compile", lambda: run_compile(mesh.id)))
    proxy = ref(tenant)
    asker = threading.Thread(
        target=run, args=("ask", lambda: store.request_variant(proxy, "envoy", "explicit", PORTS))
    )
    with transaction.atomic():
        # Holding the mesh row stops the compile at its very end (recording the revision
        # compiled), after it dropped the variant.
        Mesh.objects.select_for_update().get(pk=mesh.pk)
        compiler.start()
        while "compile" not in pids and not errors:
            threading.Event().wait(0.01)
        _wait_until_waiting(pids["compile"])
        asker.start()
        while "ask" not in pids and not errors:
            threading.Event().wait(0.01)
        _wait_until_waiting(pids["ask"])  # on the dropped variant's row
    compiler.join(60)
    asker.join(60)
    assert not errors, errors
    assert EXPLICIT in results["compile"].removed
    assert results["ask"] is True  # so the connecting proxy enqueues a compile
    assert versions(mesh)[EXPLICIT] is None  # asked for, not compiled yet
    assert store.has_uncompiled_variants(mesh.id)
    # Even with that enqueue lost, the reconciler compiles it.
    assert reconcile_meshes.apply().get() == [mesh.pk]
    assert versions(mesh)[EXPLICIT] is not None


def test_a_worker_looks_for_unused_variants_at_most_once_per_check_interval(
    tenant, embedded, ttl, settings
):
    mesh = meshes.shop(tenant)
    ask(tenant, mesh, EXPLICIT)  # its compile looked (asked for just now: kept)
    settings.MESHPLANE_VARIANT_CHECK_SECONDS = 3600  # not again for an hour
    age(mesh, EXPLICIT, 2 * TTL)
    run_compile(mesh.id, full=True)
    assert versions(mesh).get(EXPLICIT) is not None  # unused by now, but not looked for
    settings.MESHPLANE_VARIANT_CHECK_SECONDS = 0
    run_compile(mesh.id, full=True)
    assert EXPLICIT not in versions(mesh)
