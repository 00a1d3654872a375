"""The compile's path to publish: `run_compile` for a one-route change that reaches every
client of bench/propagation.py's mesh, timed to the moment it calls `publish.publish` and
to its return, with the WAL it wrote, how many of its variant row updates were HOT and the
average size of a stored version row.

    DATABASE_URL=postgres://… .venv/bin/python bench/compile_publish.py \
        [--clients 1000] [--changes 20] [--rounds 3] [--baseline TREE]

The mesh is `seed` of bench/propagation.py (N client nodes whose one backend is a routed
service), on a database of its own (Django's test database machinery: created, migrated and
dropped here). Before timing, HISTORY_LIMIT + 1 changes fill every client's history, so
that each measured change also trims 1,000 versions, as in steady state. No Redis and no
replica: publish is in-process (nobody subscribed), and its own time is left out of
"to publish".

`--baseline TREE`: another checkout of the project (e.g. `git archive <commit> | tar -x -C
TREE`). One child process per tree seeds its own database; the rounds alternate between
them (this tree, baseline, this tree, …), so both see the same machine load. Reports,
never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def child(tree: Path, clients: int, warmup: int) -> None:
    """Seed and warm up, then run one round per line read from stdin ("<changes>"),
    answering each with one JSON line of per-change measurements."""
    sys.path.insert(0, str(tree))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshapi.settings")
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.db import connection

    from bench import propagation
    from meshapi.models import Mesh, ProxyConfig, ProxyVersion
    from meshapi.receivers import compile_on_change
    from meshapi.services import resources
    from meshapi.services.kinds import ROUTE
    from meshapi.signals import mesh_changed
    from tenants.services import create_tenant, set_quota
    from workers import pipeline, publish

    # Compiles run here, by hand, not on commit.
    mesh_changed.disconnect(
        compile_on_change, sender=Mesh, dispatch_uid="meshapi.compile_on_change"
    )
    published: list[float] = []
    real_publish = publish.publish

    def timed_publish(messages: list[dict]) -> None:
        published.append(time.perf_counter())
        real_publish(messages)

    publish.publish = timed_publish
    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"bench_publish_{os.getpid()}"
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        tenant, _ = create_tenant("bench", "bench@example.com", slug="bench")
        set_quota(tenant, "virtual_nodes_per_mesh", clients + 100, actor="bench")
        mesh = propagation.seed(tenant, clients)
        pipeline.run_compile(mesh.id)
        writer = resources.Writer(actor="bench")
        table = ProxyConfig._meta.db_table
        versions = connection.ops.quote_name(ProxyVersion._meta.db_table)
        weight = 1

        def sql(query: str, args: tuple = ()) -> tuple:
            with connection.cursor() as cursor:
                cursor.execute(query, args)
                return cursor.fetchone()

        def change() -> dict:
            nonlocal weight
            weight = weight % 98 + 1
            resources.update(
                tenant,
                ROUTE,
                writer,
                mesh_name=mesh.name,
                name="split",
                parent_name="router",
                spec=propagation.route_spec(weight),
            )
            (lsn,) = sql("SELECT pg_current_wal_lsn()")
            published.clear()
            start = time.perf_counter()
            result = pipeline.run_compile(mesh.id)
            end = time.perf_counter()
            (wal,) = sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,))
            assert len(result.changed) >= clients, result.summary()
            return {
                "publish_ms": (published[0] - start) * 1000,
                "total_ms": (end - start) * 1000,
                "wal_mb": float(wal) / 1e6,
            }

        for _ in range(warmup):
            change()
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            sql("SELECT pg_stat_force_next_flush()")
            before = sql(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = %s",
                (table,),
            )
            rows = [change() for _ in range(int(line))]
            sql("SELECT pg_stat_force_next_flush()")
            after = sql(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = %s",
                (table,),
            )
            updates, hot = (a - b for a, b in zip(after, before, strict=True))
            (row_bytes,) = sql(f"SELECT avg(pg_column_size(v.*))::float FROM {versions} AS v")
            print(
                json.dumps(
                    {"changes": rows, "updates": updates, "hot": hot, "row_bytes": row_bytes}
                ),
                flush=True,
            )
    finally:
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)


def start(tree: Path, args: argparse.Namespace) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--child",
            str(tree),
            "--clients",
            str(args.clients),
            "--warmup",
            str(args.warmup),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert json.loads(proc.stdout.readline()).get("ready"), f"{tree}: seeding failed"
    return proc


def report(label: str, rounds: list[dict]) -> None:
    changes = [c for r in rounds for c in r["changes"]]
    to_publish = [c["publish_ms"] for c in changes]
    total = [c["total_ms"] for c in changes]
    wal = statistics.median(c["wal_mb"] for c in changes)
    updates = sum(r["updates"] for r in rounds)
    hot = sum(r["hot"] for r in rounds)
    row_bytes = statistics.median(r["row_bytes"] for r in rounds)
    print(
        f"{label:>9} {len(changes):>7} {statistics.median(to_publish):>8.1f} "
        f"{min(to_publish):>8.1f} {statistics.median(total):>9.1f} {min(total):>8.1f} "
        f"{wal:>7.2f} {100 * hot / max(updates, 1):>6.0f}% {row_bytes:>9.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=20, help="per round")
    parser.add_argument("--rounds", type=int, default=3, help="per tree")
    parser.add_argument("--warmup", type=int, default=21, help="changes before timing")
    parser.add_argument("--baseline", type=Path, help="another checkout to alternate with")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.clients, args.warmup)
        return
    trees = {"this": HERE}
    if args.baseline:
        trees["baseline"] = args.baseline.resolve()
    procs = {label: start(tree, args) for label, tree in trees.items()}
    results: dict[str, list[dict]] = {label: [] for label in trees}
    try:
        for _ in range(args.rounds):
            for label, proc in procs.items():
                proc.stdin.write(f"{args.changes}\n")
                proc.stdin.flush()
                results[label].append(json.loads(proc.stdout.readline()))
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait(timeout=120)
    print(f"run_compile for a one-route change reaching {args.clients} clients")
    print(
        f"{'tree':>9} {'changes':>7} {'pub p50':>8} {'pub min':>8} {'total p50':>9} "
        f"{'tot min':>8} {'WAL MB':>7} {'HOT':>7} {'version B':>9}"
    )
    for label, rounds in results.items():
        report(label, rounds)


if __name__ == "__main__":
    main()
