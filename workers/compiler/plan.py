"""What one proxy needs, resolved once before any generator runs.

The plan answers "which ports does it serve, which virtual service ports does it reach
and through which routes, which (virtual node, port) clusters does that take, with which
client TLS policy". Generators only render it. Warnings about things left out are
collected here (and by graph.py's memoized results).
"""

from dataclasses import dataclass, field

from workers.compiler import names
from workers.compiler.context import ADMIN_PORT, GATEWAY, NODE, MeshContext, ProxyRequest
from workers.compiler.frozen import EMPTY, FrozenDict, dig
from workers.compiler.graph import (
    NO_PRIORITY,
    Port,
    ResolvedRoute,
    explicit_ingress_ports,
    listener_of,
    node_ports,
    service_ports,
    service_provider,
    service_routes,
)
from workers.compiler.tls import mesh_client_tls

GATEWAY_ROUTE_TYPES = {"httpRoute": "http", "http2Route": "http2", "grpcRoute": "grpc"}


@dataclass(frozen=True)
class Ingress:
    """One listener of the proxy's own virtual node."""

    port: Port
    app_port: int  # where the local app listens
    listen_port: int  # explicit mode: this listener's own port; redirect: 15000


@dataclass(frozen=True)
class Egress:
    """One virtual service port the proxy reaches."""

    service: str
    port: Port
    routes: tuple[ResolvedRoute, ...]
    listen_port: int = 0  # explicit mode: the loopback listener's port

    @property
    def clusters(self) -> tuple[str, ...]:
        return tuple(names.upstream(t.node, t.port) for r in self.routes for t in r.targets)


@dataclass(frozen=True)
class Upstream:
    """One (virtual node, port) cluster as this proxy sees it."""

    node: str
    port: Port  # the target node's listener (protocol, health check, outlier detection)
    tls: FrozenDict | None  # the client policy TLS that applies, if any
    pool: FrozenDict | None = None  # a gateway listener's connection pool


@dataclass(frozen=True)
class GatewayRoute:
    name: str
    protocol: str
    body: FrozenDict
    priority: int
    service: str
    port: Port  # the target virtual service's port
    cluster: str  # upstream (node provider) or internal (router provider) cluster


@dataclass(frozen=True)
class GatewayPort:
    port: Port
    routes: tuple[GatewayRoute, ...]


@dataclass
class Plan:
    ctx: MeshContext
    proxy: ProxyRequest
    spec: FrozenDict
    ingress: tuple[Ingress, ...] = ()
    egress: tuple[Egress, ...] = ()
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    gateway_ports: tuple[GatewayPort, ...] = ()
    internal: tuple[Egress, ...] = ()  # router-provided services a gateway reaches
    allow_all: bool = False
    warnings: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    @property
    def explicit(self) -> bool:
        return self.proxy.kind != GATEWAY and self.proxy.interception == "explicit"

    @property
    def access_log(self) -> FrozenDict | None:
        return dig(self.spec, "logging", "accessLog", "file")

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)


def make_plan(ctx: MeshContext, proxy: ProxyRequest) -> Plan:
    if proxy.kind == GATEWAY:
        gateway = ctx.virtual_gateways.get(proxy.name)
        plan = Plan(ctx, proxy, gateway.spec if gateway else EMPTY)
        if gateway is None:
            plan.warn(f"virtual gateway '{proxy.name}' does not exist; empty configuration")
        else:
            _plan_gateway(plan)
    else:
        spec = ctx.virtual_nodes.get(proxy.name)
        plan = Plan(ctx, proxy, spec if spec is not None else EMPTY)
        if spec is None:
            plan.warn(f"virtual node '{proxy.name}' does not exist; empty configuration")
        else:
            plan.allow_all = dig(ctx.mesh, "egressFilter", "type") == "ALLOW_ALL"
            _plan_ingress(plan)
            _plan_egress(plan)
    plan.warnings.sort()
    return plan


def _plan_ingress(plan: Plan) -> None:
    ports = node_ports(plan.ctx, plan.proxy.name)
    out = []
    if plan.explicit:
        listen = explicit_ingress_ports(plan.proxy.ingress_port, ports)
        for port, (_, listen_port) in zip(ports, listen, strict=True):
            app = plan.proxy.app_port if plan.proxy.app_port and len(ports) == 1 else port.port
            out.append(Ingress(port, app, listen_port))
    else:
        out = [Ingress(port, port.port, plan.proxy.ingress_port) for port in ports]
    plan.ingress = tuple(out)
    if plan.explicit:
        plan.metadata["ingress_ports"] = {str(i.port.port): i.listen_port for i in out}
        plan.metadata["app_ports"] = {str(i.port.port): i.app_port for i in out}


def _backends(spec: FrozenDict) -> dict[str, FrozenDict]:
    """Backend virtual service name → its own client policy (or EMPTY)."""
    out: dict[str, FrozenDict] = {}
    for backend in spec.get("backends", ()):
        vs = backend.get("virtualService")
        if vs and vs.get("virtualServiceName"):
            out.setdefault(vs["virtualServiceName"], vs.get("clientPolicy") or EMPTY)
    return out


def _client_tls(policy: FrozenDict, defaults: FrozenDict, port: int) -> FrozenDict | None:
    """App Mesh: a backend's own client policy replaces the defaults; `enforce` defaults to
    true; `ports` (empty = every port) are the target ports the policy covers."""
    tls = dig(policy, "tls") or dig(defaults, "clientPolicy", "tls")
    if not tls or tls.get("enforce", True) is False:
        return None
    ports = tls.get("ports") or ()
    if ports and port not in ports:
        return None
    return tls


def _plan_egress(plan: Plan) -> None:
    ctx, spec = plan.ctx, plan.spec
    backends = _backends(spec)
    defaults = spec.get("backendDefaults", EMPTY)
    egress = []
    tls_by_cluster: dict[tuple[str, int], list[tuple[str, FrozenDict | None]]] = {}
    for service in sorted(backends):
        ports = service_ports(ctx, service)
        _report(plan, ports.warnings)
        for port in ports.value:
            routes = service_routes(ctx, service, port)
            _report(plan, routes.warnings)
            if not routes.value:
                continue
            egress.append(Egress(service, port, routes.value))
            for route in routes.value:
                for t in route.targets:
                    tls = _client_tls(backends[service], defaults, t.port)
                    tls_by_cluster.setdefault((t.node, t.port), []).append((service, tls))
    if plan.explicit:
        ports = _free_ports(plan, len(egress))
        egress = [
            Egress(e.service, e.port, e.routes, p) for e, p in zip(egress, ports, strict=True)
        ]
        plan.metadata["egress_ports"] = {
            f"{e.service}:{e.port.port}": e.listen_port for e in egress
        }
    plan.egress = tuple(egress)
    for cluster, uses in sorted(tls_by_cluster.items()):
        _add_upstream(plan, cluster, uses)


def _free_ports(plan: Plan, count: int) -> list[int]:
    """Explicit mode: loopback egress ports from the proxy's base, in sorted backend order,
    skipping the ingress listeners', the app's and Envoy's admin port."""
    taken = (
        {ADMIN_PORT} | {i.listen_port for i in plan.ingress} | {i.app_port for i in plan.ingress}
    )
    out, port = [], plan.proxy.egress_port
    while len(out) < count:
        if port not in taken:
            out.append(port)
        port += 1
    return out


def _add_upstream(
    plan: Plan,
    key: tuple[str, int],
    uses: list[tuple[str, FrozenDict | None]],
    pool: FrozenDict | None = None,
) -> None:
    node, port = key
    cluster = names.upstream(node, port)
    listener = listener_of(plan.ctx, node, port)
    uses = sorted(set(uses), key=lambda u: u[0])
    chosen = uses[0][1]
    if any(tls != chosen for _, tls in uses):
        services = sorted({s for s, _ in uses})
        plan.warn(
            f"cluster {cluster} is reached through virtual services {', '.join(services)} with "
            f"different client policies; using the policy for '{uses[0][0]}'"
        )
    secured_by_mesh = listener is not None and not listener.listener.get("tls")
    if chosen is None and plan.ctx.mtls and secured_by_mesh:
        # Automatic mTLS: only towards listeners the mesh secures itself; a listener with
        # App Mesh TLS keeps App Mesh's rules (a client policy decides).
        chosen = _mesh_client_tls(plan.ctx, node)
    plan.upstreams[cluster] = Upstream(node, listener, chosen, pool)


def _mesh_client_tls(ctx: MeshContext, node: str) -> FrozenDict:
    """One object per target node and mesh compile: every proxy reaching the node shares
    it, so the cluster memo finds it by identity instead of re-freezing and re-hashing."""
    key = ("mesh_client_tls", node)
    found = ctx._memo.get(key)
    if found is None:
        found = ctx._memo[key] = mesh_client_tls(ctx.spiffe_id(NODE, node))
    return found


def _report(plan: Plan, warnings: tuple[str, ...]) -> None:
    for w in warnings:
        plan.warn(w)


def _plan_gateway(plan: Plan) -> None:
    gateway = plan.ctx.virtual_gateways[plan.proxy.name]
    defaults = plan.spec.get("backendDefaults", EMPTY)
    listeners = [
        Port(int(lst["portMapping"]["port"]), lst["portMapping"]["protocol"], lst)
        for lst in plan.spec.get("listeners", ())
    ]
    listeners.sort(key=lambda p: p.port)
    out, internal, uses = [], {}, {}
    pools: dict[tuple[str, int], FrozenDict] = {}
    for listener in listeners:
        routes = []
        for name, spec in gateway.routes.items():
            resolved = _gateway_route(plan, name, spec, listener)
            if resolved is None:
                continue
            route, service_routes_ = resolved
            routes.append(route)
            if route.cluster.startswith("internal/"):
                internal[route.cluster] = Egress(route.service, route.port, service_routes_)
            for r in service_routes_:
                for t in r.targets:
                    key = (t.node, t.port)
                    tls = _client_tls(EMPTY, defaults, t.port)
                    uses.setdefault(key, []).append((route.service, tls))
                    pool = listener.listener.get("connectionPool")
                    if pool and key not in pools:
                        pools[key] = pool
        routes.sort(key=lambda r: (r.priority, r.name))
        out.append(GatewayPort(listener, tuple(routes)))
    plan.gateway_ports = tuple(out)
    plan.internal = tuple(internal[k] for k in sorted(internal))
    for key, use in sorted(uses.items()):
        _add_upstream(plan, key, use, pools.get(key))


def _gateway_route(plan: Plan, name: str, spec: FrozenDict, listener: Port):
    route_type = next((t for t in GATEWAY_ROUTE_TYPES if spec.get(t)), None)
    if route_type is None:
        return None
    body = spec[route_type]
    protocol = GATEWAY_ROUTE_TYPES[route_type]
    match_port = dig(body, "match", "port")
    if match_port is not None and int(match_port) != listener.port:
        return None
    if match_port is None and protocol != listener.protocol:
        return None
    label = f"{plan.proxy.name}/{name}"
    service = dig(body, "action", "target", "virtualService", "virtualServiceName")
    ports = service_ports(plan.ctx, service)
    if not ports.value:
        plan.warn(f"gateway route {label}: target virtual service '{service}' is unusable; skipped")
        _report(plan, ports.warnings)
        return None
    wanted = dig(body, "action", "target", "port")
    if wanted is None and len(ports.value) > 1:
        plan.warn(
            f"gateway route {label}: virtual service '{service}' has several ports and the "
            "target names none; skipped"
        )
        return None
    port = (
        ports.value[0]
        if wanted is None
        else next((p for p in ports.value if p.port == int(wanted)), None)
    )
    if port is None:
        plan.warn(
            f"gateway route {label}: virtual service '{service}' has no port {wanted}; skipped"
        )
        return None
    routes = service_routes(plan.ctx, service, port)
    _report(plan, routes.warnings)
    if not routes.value:
        return None
    kind, _ = service_provider(plan.ctx, service)
    if kind == "virtualNode":
        t = routes.value[0].targets[0]
        cluster = names.upstream(t.node, t.port)
    else:
        cluster = names.internal(service, port.port)
    priority = spec.get("priority")
    return (
        GatewayRoute(
            label,
            protocol,
            body,
            NO_PRIORITY if priority is None else int(priority),
            service,
            port,
            cluster,
        ),
        routes.value,
    )
