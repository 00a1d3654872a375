"""Which proxies must recompile when something changes: the explicit dependency graph.

A proxy depends on named resources, present or not (a backend naming a virtual service
that does not exist yet depends on that name, so creating it recompiles the proxy):

- every proxy: the mesh, and its own virtual node or gateway;
- a virtual node: each backend virtual service;
- a gateway: each of its gateway routes and each route's target virtual service;
- a virtual service: its provider — a virtual node (and that node's endpoints), or a
  virtual router, each of its routes, and each route target's virtual node and endpoints.

Changes are `(kind, name)` with kind one of mesh, virtualNode, virtualService,
virtualRouter, route, virtualGateway, gatewayRoute, endpoints and backends (name = virtual
node; a change to a node's `backends` is reported as both virtualNode and backends);
routes and gateway routes are named `<parent>/<name>`. A change to a route or gateway
route counts as a change to its parent, so added and deleted routes are covered.
With the mesh's automatic mTLS on, a virtual node also depends on what makes a proxy its
allowed caller (authz.py): the callers' `backends`, the virtual services
routing to it with their routers and routes, and the gateway routes targeting those
services — so adding a backend to a caller recompiles the callee's RBAC.
"""

from collections.abc import Iterable

from workers.compiler import authz
from workers.compiler.context import GATEWAY, NODE, MeshContext
from workers.compiler.frozen import dig
from workers.compiler.graph import service_provider

Dep = tuple[str, str]
Proxy = tuple[str, str]  # (virtualNode | virtualGateway, name)


def _service(ctx: MeshContext, service: str) -> frozenset[Dep]:
    key = ("deps_service", service)
    found = ctx._memo.get(key)
    if found is not None:
        return found
    deps: set[Dep] = {("virtualService", service)}
    provider = service_provider(ctx, service)
    if provider is not None:
        kind, name = provider
        deps.add((kind, name))
        if kind == "virtualNode":
            deps.add(("endpoints", name))
        else:
            router = ctx.virtual_routers.get(name)
            for route_name, spec in router.routes.items() if router else ():
                deps.add(("route", f"{name}/{route_name}"))
                for body in spec.values():
                    for target in dig(body, "action", "weightedTargets", default=()) or ():
                        deps.add(("virtualNode", target["virtualNode"]))
                        deps.add(("endpoints", target["virtualNode"]))
    found = frozenset(deps)
    ctx._memo[key] = found
    return found


def requires(ctx: MeshContext, proxy: Proxy) -> frozenset[Dep]:
    """Everything a proxy's configuration is computed from (memoized on the context)."""
    key = ("requires", proxy)
    found = ctx._memo.get(key)
    if found is None:
        found = ctx._memo[key] = _requires(ctx, proxy)
    return found


def _requires(ctx: MeshContext, proxy: Proxy) -> frozenset[Dep]:
    kind, name = proxy
    deps: set[Dep] = {("mesh", ctx.mesh_name), (kind, name)}
    if kind == NODE:
        for backend in dig(ctx.virtual_nodes.get(name), "backends", default=()) or ():
            service = dig(backend, "virtualService", "virtualServiceName")
            if service:
                deps |= _service(ctx, service)
        if ctx.mtls:
            deps |= authz.requires(ctx, name)
    else:
        gateway = ctx.virtual_gateways.get(name)
        for route_name, spec in gateway.routes.items() if gateway else ():
            deps.add(("gatewayRoute", f"{name}/{route_name}"))
            for body in spec.values():
                service = dig(body, "action", "target", "virtualService", "virtualServiceName")
                if service:
                    deps |= _service(ctx, service)
    return frozenset(deps)


def _normalise(changed: Iterable[Dep]) -> set[Dep]:
    out = set()
    for kind, name in changed:
        out.add((kind, name))
        if kind == "route":
            out.add(("virtualRouter", name.split("/", 1)[0]))
        elif kind == "gatewayRoute":
            out.add(("virtualGateway", name.split("/", 1)[0]))
    return out


def all_proxies(ctx: MeshContext) -> list[Proxy]:
    return [(NODE, n) for n in ctx.virtual_nodes] + [(GATEWAY, g) for g in ctx.virtual_gateways]


def dependents(
    ctx: MeshContext, changed: Iterable[Dep], previous: MeshContext | None = None
) -> set[Proxy]:
    """The proxies (kind, name) of `ctx` whose configuration may differ after `changed`.
    Pass the context from before the change as `previous` to also catch edges the change
    removed (both graphs are consulted)."""
    changes = _normalise(changed)
    if any(kind == "mesh" for kind, _ in changes):
        return set(all_proxies(ctx))
    out: set[Proxy] = set()
    for graph in (ctx, previous) if previous is not None else (ctx,):
        index = _reverse(graph)
        for change in changes:
            out.update(index.get(change, ()))
    present = set(all_proxies(ctx))
    return {p for p in out if p in present}


def _reverse(ctx: MeshContext) -> dict[Dep, list[Proxy]]:
    """Input → the proxies that require it, built once per context: each `dependents`
    call then costs what the change touches, not proxies × inputs."""
    found = ctx._memo.get(("reverse",))
    if found is None:
        found = {}
        for proxy in all_proxies(ctx):
            for dep in requires(ctx, proxy):
                found.setdefault(dep, []).append(proxy)
        ctx._memo[("reverse",)] = found
    return found
