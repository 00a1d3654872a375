"""The compile pipeline on a real database: load, full compile + store, and the latency
of a one-route change and an endpoint-only change from commit to stored versions.

    DATABASE_URL=postgres://… .venv/bin/python bench/compile_pipeline.py [N ...]  (100 1000)

Runs on a database of its own (Django's test database machinery: created, migrated and
dropped here), seeded directly through the ORM with bench/compile.py's mesh shape (each
node: one HTTP listener, 5 backends; each service: a router with 3 weighted routes). No
Celery: `run_compile` is what the compile_mesh task runs. Reports, never asserts.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshapi.settings")
os.environ.pop("REDIS_URL", None)  # publish in-process; nothing is enqueued here

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.db.models import F  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from bench.compile import specs  # noqa: E402
from meshapi import models as m  # noqa: E402
from tenants.services import create_tenant  # noqa: E402
from workers import loader  # noqa: E402
from workers.compiler import xds  # noqa: E402
from workers.pipeline import run_compile  # noqa: E402


def seed(tenant, n: int) -> m.Mesh:
    data = specs(n)
    mesh = m.Mesh.objects.create(
        tenant=tenant, name=f"bench{n}", spec={"egressFilter": {"type": "DROP_ALL"}}
    )
    common = {"tenant": tenant, "mesh": mesh}
    nodes = m.VirtualNode.objects.bulk_create(
        [m.VirtualNode(name=k, spec=v, **common) for k, v in data["virtual_nodes"].items()],
        batch_size=1000,
    )
    m.VirtualService.objects.bulk_create(
        [
            m.VirtualService(
                name=k,
                spec=v,
                provider_kind="virtualRouter",
                provider_name=v["provider"]["virtualRouter"]["virtualRouterName"],
                **common,
            )
            for k, v in data["virtual_services"].items()
        ],
        batch_size=1000,
    )
    routers = m.VirtualRouter.objects.bulk_create(
        [m.VirtualRouter(name=k, spec=v, **common) for k, v in data["virtual_routers"].items()],
        batch_size=1000,
    )
    m.Route.objects.bulk_create(
        [
            m.Route(name=name, spec=spec, virtual_router=router, **common)
            for router in routers
            for name, spec in data["routes"][router.name].items()
        ],
        batch_size=1000,
    )
    by_name = {node.name: node for node in nodes}
    m.Endpoint.objects.bulk_create(
        [
            m.Endpoint(
                virtual_node=by_name[node],
                port=port,
                target_port=port,
                address=e["address"],
                source="static",
                **common,
            )
            for (node, port), items in data["endpoints"].items()
            for e in items
        ],
        batch_size=1000,
    )
    return mesh


def bump(mesh: m.Mesh) -> None:
    m.Mesh.objects.filter(pk=mesh.pk).update(revision=F("revision") + 1)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - start) * 1000


def main(sizes: list[int]) -> None:
    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"bench_pipeline_{os.getpid()}"
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        tenant, _ = create_tenant("bench", "bench@example.com")
        print(f"database: {connection.vendor}")
        print(
            f"{'N':>6} {'load q':>6} {'load ms':>8} {'full ms':>9} {'stored':>7} "
            f"{'no-op ms':>8} {'route ms':>8} {'compiled':>8} {'changed':>7} "
            f"{'endpoint ms':>11} {'changed':>7} {'eds only':>8}"
        )
        for n in sizes:
            mesh = seed(tenant, n)
            with CaptureQueriesContext(connection) as queries:
                _, load_ms = timed(lambda mesh=mesh: loader.load(mesh.id))
            full, full_ms = timed(lambda mesh=mesh: run_compile(mesh.id))
            _, noop_ms = timed(lambda mesh=mesh: run_compile(mesh.id))

            route = m.Route.objects.get(mesh=mesh, virtual_router__name="r0", name="rt0")
            route.spec = {**route.spec, "priority": 7}
            route.save()
            bump(mesh)
            changed, route_ms = timed(lambda mesh=mesh: run_compile(mesh.id))

            before = {
                r.name: r.current.type_versions
                for r in m.ProxyConfig.objects.filter(mesh=mesh).select_related("current")
            }
            m.Endpoint.objects.filter(mesh=mesh, virtual_node__name="n0").update(
                address="10.255.0.9"
            )
            bump(mesh)
            eds, eds_ms = timed(lambda mesh=mesh: run_compile(mesh.id))
            after = {
                r.name: r.current.type_versions
                for r in m.ProxyConfig.objects.filter(mesh=mesh).select_related("current")
            }
            moved = {t for name in after for t in after[name] if after[name][t] != before[name][t]}
            print(
                f"{n:>6} {len(queries):>6} {load_ms:>8.1f} {full_ms:>9.1f} {len(full.changed):>7} "
                f"{noop_ms:>8.1f} {route_ms:>8.1f} {len(changed.compiled):>8} "
                f"{len(changed.changed):>7} {eds_ms:>11.1f} {len(eds.changed):>7} "
                f"{str(moved == {xds.ENDPOINT}):>8}"
            )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000])
