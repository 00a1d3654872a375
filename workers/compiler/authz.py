"""Who may call a virtual node under the mesh's automatic mTLS: its callers by SPIFFE id.

A proxy is an allowed caller of virtual node N when it declares a way to reach N:
- a virtual node whose `backends` name a virtual service that routes to N, and
- a virtual gateway whose gateway routes target such a virtual service,
where a virtual service routes to N when N is its provider, or its provider router has a
route with N among its weighted targets (any route, any port, any weight: the caller
declared the dependency, so it is admitted even while a route is being shifted to 0).

The answer depends on other proxies' specs (the caller → callee edge), so `requires`
names everything it is computed from for the dependency graph (deps.py): the callers'
backends (`backends <node>`, not their whole spec: a caller's new listener timeout
recompiles no callee), the virtual services routing to N with their routers and routes,
and the gateways and gateway routes targeting those services (a router or gateway stands
for its routes' additions and deletions, as everywhere in deps.py). Everything is indexed
once per mesh context.
"""

from dataclasses import dataclass

from workers.compiler.context import GATEWAY, NODE, MeshContext
from workers.compiler.frozen import dig
from workers.compiler.graph import service_provider

Dep = tuple[str, str]


@dataclass(frozen=True)
class _Index:
    services_to: dict[str, frozenset[str]]  # node → virtual services routing to it
    callers: dict[str, frozenset[tuple[str, str]]]  # node → (kind, name) of its callers
    deps: dict[str, frozenset[Dep]]  # node → inputs its callers are computed from


def _service_targets(ctx: MeshContext, service: str) -> tuple[set[str], set[Dep]]:
    """The virtual nodes a virtual service can route to, and the inputs that says so."""
    deps: set[Dep] = {("virtualService", service)}
    provider = service_provider(ctx, service)
    if provider is None:
        return set(), deps
    kind, name = provider
    if kind == "virtualNode":
        return {name}, deps
    # The router stands for its routes' additions and deletions (deps.py's contract).
    deps.add(("virtualRouter", name))
    router = ctx.virtual_routers.get(name)
    targets: set[str] = set()
    for route_name, spec in router.routes.items() if router else ():
        deps.add(("route", f"{name}/{route_name}"))
        for body in spec.values():
            for target in dig(body, "action", "weightedTargets", default=()) or ():
                targets.add(target["virtualNode"])
    return targets, deps


def _index(ctx: MeshContext) -> _Index:
    found = ctx._memo.get(("authz",))
    if found is not None:
        return found
    services_to: dict[str, set[str]] = {}
    service_deps: dict[str, set[Dep]] = {}
    for service in ctx.virtual_services:
        targets, deps = _service_targets(ctx, service)
        service_deps[service] = deps
        for node in targets:
            services_to.setdefault(node, set()).add(service)
    reaches: dict[str, set[tuple[str, str, Dep]]] = {}  # service → callers, and why
    for name, spec in ctx.virtual_nodes.items():
        for backend in dig(spec, "backends", default=()) or ():
            service = dig(backend, "virtualService", "virtualServiceName")
            if service:
                reaches.setdefault(service, set()).add((NODE, name, ("backends", name)))
    for name, gateway in ctx.virtual_gateways.items():
        for route_name, spec in gateway.routes.items():
            for body in spec.values():
                service = dig(body, "action", "target", "virtualService", "virtualServiceName")
                if service:
                    dep = ("gatewayRoute", f"{name}/{route_name}")
                    reaches.setdefault(service, set()).add((GATEWAY, name, dep))
                    # The gateway stands for its routes' additions and deletions.
                    reaches[service].add((GATEWAY, name, (GATEWAY, name)))
    callers: dict[str, frozenset[tuple[str, str]]] = {}
    node_deps: dict[str, frozenset[Dep]] = {}
    for node, services in services_to.items():
        who: set[tuple[str, str]] = set()
        deps: set[Dep] = set()
        for service in services:
            deps |= service_deps[service]
            for kind, name, dep in reaches.get(service, ()):
                who.add((kind, name))
                deps.add(dep)
        callers[node] = frozenset(who)
        node_deps[node] = frozenset(deps)
    found = _Index(
        {n: frozenset(s) for n, s in services_to.items()},
        callers,
        node_deps,
    )
    ctx._memo[("authz",)] = found
    return found


def callers(ctx: MeshContext, node: str) -> tuple[tuple[str, str], ...]:
    """(kind, name) of every proxy admitted to call `node`, sorted."""
    return tuple(sorted(_index(ctx).callers.get(node, ())))


def caller_ids(ctx: MeshContext, node: str) -> tuple[str, ...]:
    """The SPIFFE ids of `node`'s allowed callers, sorted."""
    return tuple(sorted(ctx.spiffe_id(kind, name) for kind, name in callers(ctx, node)))


def requires(ctx: MeshContext, node: str) -> frozenset[Dep]:
    """The inputs `node`'s callers are computed from. A node that nothing routes to yet
    depends on nothing here: whatever starts routing to it (a new or changed virtual
    service, router route or caller) is itself a change its new graph names."""
    return _index(ctx).deps.get(node, frozenset())


def listener_principals(ctx: MeshContext, node: str, listener_tls) -> tuple[str, ...] | None:
    """What a listener of `node` admits: its callers' SPIFFE ids plus the SANs its App Mesh
    `tls.validation` allows. None where no authorization applies: the mesh's mTLS is off,
    or the listener's TLS checks no client certificate (no identity to authorize)."""
    if not ctx.mtls:
        return None
    if dig(listener_tls, "mode", default="DISABLED") == "DISABLED":
        return None
    if not dig(listener_tls, "validation"):
        return None
    sans = dig(listener_tls, "validation", "subjectAlternativeNames", "match", "exact")
    return tuple(sorted(set(caller_ids(ctx, node)) | set(sans or ())))


def unauthorized_warning(where: str, listener_tls) -> str:
    mode = dig(listener_tls, "mode", default="DISABLED")
    return (
        f"{where}: its App Mesh TLS (mode {mode}) checks no client certificate, so the "
        "mesh's authorization does not apply to it; set tls.validation to restrict callers"
    )
