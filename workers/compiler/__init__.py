"""The mesh compiler: App Mesh specs in, Envoy xDS v3 snapshots out. Pure.

No Django, Celery, boto3 or gRPC here (tests/compiler/test_purity.py enforces it): only
the standard library and xds-protos messages. Deterministic: sorted output, content-hash
versions, so recompiling an unchanged mesh produces the same versions.

Public API (what the pipeline calls):

    ctx = MeshContext.from_specs(mesh_name, mesh_spec, virtual_nodes={name: spec}, ...,
                                 endpoints={(node, port): [Endpoint(...)]})
    for proxy in proxies_of(ctx):                # default consumer/mode per node/gateway
        snapshot = compile_proxy(ctx, proxy)     # Snapshot; snapshot.check() before storing
        snapshot.version, snapshot.hashes[type_url][name], snapshot.warnings
    dependents(new_ctx, {("route", "router/name")}, previous=old_ctx)
        # → {("virtualNode", "frontend"), ...}: the proxies to recompile

- `compile_proxy(ctx, proxy)` compiles one proxy (a `ProxyRequest`: virtual node or gateway,
  consumer `envoy` | `grpc`, interception `redirect` | `explicit`). Reuse one `ctx` for all
  proxies of a mesh compile: identical routes, route configurations and clusters are then
  built once and shared (memoized on the context), and virtual nodes with the same spec
  asking for the same variant are compiled once (outside automatic mTLS, the only place a
  node's own name reaches its configuration).
- `proxies_of(ctx)` lists a `ProxyRequest` per virtual node and gateway with the default
  consumer (`envoy`) and interception (`redirect`); an agent declaring other values in its
  node metadata gets `dataclasses.replace(proxy, consumer=..., interception=...)`.
- `dependents(ctx, changed, previous=None)` returns `(kind, name)` pairs rather than bare
  names, because a virtual node and a virtual gateway may share a name. See deps.py.

Design decisions (see the module docstrings for detail): listener `healthCheck` and
`outlierDetection` land on the callers' clusters (clusters.py); `acm` certificates and
trust map to the mesh identity / mesh CA SDS secrets (tls.py); explicit-mode ports are
allocated in sorted order from the proxy's base ports and reported in
`snapshot.metadata` (plan.py); a gateway reaches router-provided services through an
Envoy internal listener applying the router's routes (routes.py, listeners.py). The mesh's
automatic mTLS (`MeshContext.mtls_mode`, `trust_domain`) secures listeners without App
Mesh TLS and the clusters towards them over the identity / mesh CA secrets (tls.py), and
authorizes callers by SPIFFE id with RBAC (authz.py, generators/rbac.py).
"""

import dataclasses
import operator

from workers.compiler.context import (
    GATEWAY,
    NODE,
    Endpoint,
    MeshContext,
    ProxyRequest,
)
from workers.compiler.deps import dependents, requires
from workers.compiler.generators import Builder
from workers.compiler.plan import make_plan
from workers.compiler.profile import PROFILES
from workers.compiler.snapshot import InconsistentSnapshot, Snapshot

# Runtime values the agent's Envoy bootstrap must carry for these snapshots: App Mesh accepts
# regexes up to 255 characters, beyond RE2's default program-size limit in Envoy.
BOOTSTRAP_RUNTIME = {"re2.max_program_size.error_level": 1000}

__all__ = [
    "BOOTSTRAP_RUNTIME",
    "GATEWAY",
    "NODE",
    "Endpoint",
    "InconsistentSnapshot",
    "MeshContext",
    "ProxyRequest",
    "Snapshot",
    "compile_proxy",
    "dependents",
    "proxies_of",
    "requires",
]


def compile_proxy(ctx: MeshContext, proxy: ProxyRequest) -> Snapshot:
    """One proxy's snapshot. Virtual nodes with the same spec asking for the same variant
    get the same configuration, unless the mesh's automatic mTLS is on (a node's own
    identity and its callers then enter its listeners): within one context such a node is
    compiled once and the others get that snapshot under their own node id."""
    shape = _shape(ctx, proxy)
    if shape is not None:
        found = ctx._memo.get(shape)
        if found is not None:
            return found.for_proxy(proxy.node_id(ctx.mesh_name), proxy)
    snapshot = _compile(ctx, proxy)
    if shape is not None:
        ctx._memo[shape] = snapshot
    return snapshot


def _shape(ctx: MeshContext, proxy: ProxyRequest) -> tuple | None:
    """What a virtual node's configuration is computed from besides the mesh: its spec
    and the variant, never its name (which only mTLS's identities and authorization use).
    None where the name counts: gateways (route names carry it), mTLS, a missing node."""
    if proxy.kind != NODE or ctx.mtls:
        return None
    spec = ctx.virtual_nodes.get(proxy.name)
    if spec is None:
        return None
    return ("proxy_shape", _variant(proxy), spec)


# A request's fields but its name, as a tuple (a compile asks this of 1,000 proxies: a
# tuple is built and hashed in a fraction of what a ProxyRequest copy takes).
_variant = operator.attrgetter(
    *(f.name for f in dataclasses.fields(ProxyRequest) if f.name != "name")
)


def _compile(ctx: MeshContext, proxy: ProxyRequest) -> Snapshot:
    plan = make_plan(ctx, proxy)
    out = Builder(plan)
    for generate in PROFILES[proxy.consumer]:
        generate(plan, out)
    metadata = dict(plan.metadata)
    metadata.update(out.refs.metadata())
    return Snapshot.build(
        proxy.node_id(ctx.mesh_name),
        proxy,
        out.resources,
        plan.warnings,
        metadata,
        hasher=out.hash_of,
    )


def proxies_of(ctx: MeshContext) -> list[ProxyRequest]:
    return [ProxyRequest(NODE, name) for name in ctx.virtual_nodes] + [
        ProxyRequest(GATEWAY, name) for name in ctx.virtual_gateways
    ]
