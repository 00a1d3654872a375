"""Compiler benchmark: full compile cost per (proxy × reachable service) as meshes grow,
and the cost of a one-route change and of an endpoint-only change.

    .venv/bin/python bench/compile.py [N ...]      (default: 100 1000 5000)

Each virtual node has one HTTP listener and 5 backends; each backend service is provided
by a router with 3 routes of weighted targets. Prints ratios against the smallest mesh
measured in the same run (goal for linear: per-service cost at the largest ≤ 1.2× at 100).

The per-service cost is CPU time of this process (`time.process_time`), so other load on
a shared machine does not skew the ratio; wall seconds are printed beside it. The collector
is paused while proxies compile, as `workers.pipeline.compile_variants` does. The last
column is the CPU of a full compile of the same mesh under automatic mTLS STRICT over the
plain one.
"""

import gc
import sys
import time

sys.path.insert(0, ".")

from workers.compiler import (  # noqa: E402
    MeshContext,
    ProxyRequest,
    compile_proxy,
    dependents,
    proxies_of,
)

BACKENDS = 5


def specs(n: int, variant: int = 0) -> dict:
    nodes, services, routers, routes, endpoints = {}, {}, {}, {}, {}
    for i in range(n):
        nodes[f"n{i}"] = {
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
            "backends": [
                {"virtualService": {"virtualServiceName": f"s{(i + k) % n}.local"}}
                for k in range(1, BACKENDS + 1)
            ],
        }
        services[f"s{i}.local"] = {"provider": {"virtualRouter": {"virtualRouterName": f"r{i}"}}}
        routers[f"r{i}"] = {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}
        routes[f"r{i}"] = {
            f"rt{k}": {
                "priority": k,
                "httpRoute": {
                    "match": {"prefix": f"/{k}" if k else "/"},
                    "action": {
                        "weightedTargets": [
                            {"virtualNode": f"n{(i + k + j) % n}", "weight": 50 + variant}
                            for j in range(2)
                        ]
                    },
                },
            }
            for k in range(3)
        }
        endpoints[(f"n{i}", 8080)] = [{"address": f"10.{i // 250}.{i % 250}.1", "port": 8080}]
    return dict(
        virtual_nodes=nodes,
        virtual_services=services,
        virtual_routers=routers,
        routes=routes,
        endpoints=endpoints,
    )


def build(data: dict, mtls_mode: str = "DISABLED") -> MeshContext:
    return MeshContext.from_specs(
        "bench",
        {"egressFilter": {"type": "DROP_ALL"}},
        mtls_mode=mtls_mode,
        trust_domain="111111111111.meshplane.local",
        **data,
    )


def full(ctx: MeshContext) -> tuple[float, float, dict]:
    """(wall seconds, CPU seconds, snapshots) of compiling every proxy."""
    gc.collect()
    gc.disable()
    try:
        start, cpu = time.perf_counter(), time.process_time()
        out = {(p.kind, p.name): compile_proxy(ctx, p) for p in proxies_of(ctx)}
        return time.perf_counter() - start, time.process_time() - cpu, out
    finally:
        gc.enable()


def main(sizes: list[int]) -> None:
    base = None
    print(
        f"{'N':>6} {'full s':>8} {'CPU µs/(proxy×svc)':>19} {'ratio':>6} "
        f"{'route Δ ms':>10} {'touched':>8} {'changed':>8} {'endpoint Δ ms':>13} {'eds only':>8} "
        f"{'mTLS CPU ×':>10}"
    )
    for n in sizes:
        data = specs(n)
        ctx = build(data)
        seconds, cpu, before = full(ctx)
        per = cpu / (n * BACKENDS) * 1e6
        base = base or per

        # One route changes: recompile only its dependents against a fresh context.
        changed = dict(data, routes=dict(data["routes"]))
        route = dict(changed["routes"]["r0"])
        route["rt0"] = {**route["rt0"], "priority": 7}
        changed["routes"]["r0"] = route
        start = time.perf_counter()
        after_ctx = build(changed)
        touched = dependents(after_ctx, {("route", "r0/rt0")}, previous=ctx)
        after = {p: compile_proxy(after_ctx, ProxyRequest(*p)) for p in touched}
        route_ms = (time.perf_counter() - start) * 1000
        new_versions = sum(1 for p, s in after.items() if s.version != before[p].version)

        # Endpoint-only change on n0: the dependents' snapshots differ in EDS only.
        eps = dict(data["endpoints"])
        eps[("n0", 8080)] = [{"address": "10.255.0.9", "port": 8080}]
        start = time.perf_counter()
        ep_ctx = build(dict(data, endpoints=eps))
        ep_touched = dependents(ep_ctx, {("endpoints", "n0")}, previous=ctx)
        ep_after = {p: compile_proxy(ep_ctx, ProxyRequest(*p)) for p in ep_touched}
        endpoint_ms = (time.perf_counter() - start) * 1000
        eds_only = all(
            {t for t, v in s.type_versions.items() if v != before[p].type_versions[t]}
            <= {"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"}
            for p, s in ep_after.items()
        )
        # The same mesh under automatic mTLS STRICT (TLS contexts, RBAC of each node's
        # callers): full-compile CPU against the run above.
        _, strict_cpu, _ = full(build(data, "STRICT"))
        print(
            f"{n:>6} {seconds:>8.2f} {per:>19.1f} {per / base:>6.2f} {route_ms:>10.1f} "
            f"{len(touched):>8} {new_versions:>8} {endpoint_ms:>13.1f} {str(eds_only):>8} "
            f"{strict_cpu / cpu:>10.2f}"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000, 5000])
