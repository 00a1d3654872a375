"""App Mesh semantics that do not depend on who is asking: what ports a virtual service
has, and which routes (with resolved targets) serve each of them.

Results are memoized on the context (one compile of a mesh shares them across proxies)
and carry their own warnings, which every proxy that uses the result reports.
"""

from dataclasses import dataclass

from workers.compiler.context import MeshContext
from workers.compiler.frozen import EMPTY, FrozenDict, dig

HTTP_FAMILY = ("http", "http2", "grpc")
ROUTE_TYPES = {"httpRoute": "http", "http2Route": "http2", "grpcRoute": "grpc", "tcpRoute": "tcp"}
NO_PRIORITY = 10_000  # after every App Mesh priority (0..1000)


@dataclass(frozen=True)
class Port:
    port: int
    protocol: str  # http | http2 | grpc | tcp
    listener: FrozenDict = EMPTY  # the listener spec, for a virtual node's listeners


@dataclass(frozen=True)
class Target:
    node: str
    port: int
    weight: int


@dataclass(frozen=True)
class ResolvedRoute:
    name: str  # "<router>/<route>", or "<node>" for a node provider's implicit route
    protocol: str  # the route type: http | http2 | grpc | tcp
    body: FrozenDict  # the httpRoute / grpcRoute / … object (EMPTY for implicit routes)
    priority: int
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class Resolved:
    value: object
    warnings: tuple[str, ...] = ()


def _memo(ctx: MeshContext, key: tuple, build) -> Resolved:
    found = ctx._memo.get(key)
    if found is None:
        warnings: list[str] = []
        found = Resolved(build(warnings.append), tuple(warnings))
        ctx._memo[key] = found
    return found


def node_ports(ctx: MeshContext, node: str) -> tuple[Port, ...]:
    """A virtual node's listeners, in port order (a repeated port keeps the first)."""
    key = ("node_ports", node)
    found = ctx._memo.get(key)
    if found is None:
        found = _ports(ctx.virtual_nodes.get(node, EMPTY).get("listeners", ()))
        ctx._memo[key] = found
    return found


def _ports(listeners) -> tuple[Port, ...]:
    seen: dict[int, Port] = {}
    for listener in listeners:
        port = dig(listener, "portMapping", "port")
        protocol = dig(listener, "portMapping", "protocol")
        if port is not None and port not in seen:
            seen[port] = Port(int(port), protocol, listener)
    return tuple(seen[p] for p in sorted(seen))


def listener_ports(listeners) -> tuple[int, ...]:
    """The distinct listener ports of a virtual node's spec `listeners`, in port order: the
    order `node_ports` gives, for code outside the compiler."""
    return tuple(port.port for port in _ports(listeners))


def explicit_ingress_ports(base: int, ports) -> list[tuple[int, int]]:
    """Explicit mode: (listener port, the ingress listener's own port) for each of a node's
    listener ports in port order, numbered up from the proxy's ingress port `base`. The
    compiler builds the listeners this way and registration addresses them this way."""
    return [(port, base + i) for i, port in enumerate(ports)]


def service_provider(ctx: MeshContext, service: str) -> tuple[str, str] | None:
    """("virtualNode" | "virtualRouter", name), or None without a provider."""
    provider = dig(ctx.virtual_services.get(service), "provider")
    if not provider:
        return None
    for kind in ("virtualNode", "virtualRouter"):
        if provider.get(kind):
            return kind, provider[kind][f"{kind}Name"]
    return None


def service_ports(ctx: MeshContext, service: str) -> Resolved:
    """The ports a virtual service answers on: its provider node's or router's listeners."""

    def build(warn) -> tuple[Port, ...]:
        if service not in ctx.virtual_services:
            warn(f"backend virtual service '{service}' does not exist; skipped")
            return ()
        provider = service_provider(ctx, service)
        if provider is None:
            warn(f"virtual service '{service}' has no provider; skipped")
            return ()
        kind, name = provider
        if kind == "virtualNode":
            if name not in ctx.virtual_nodes:
                warn(f"virtual service '{service}': provider virtual node '{name}' does not exist")
                return ()
            ports = node_ports(ctx, name)
        else:
            router = ctx.virtual_routers.get(name)
            if router is None:
                warn(
                    f"virtual service '{service}': provider virtual router '{name}' does not exist"
                )
                return ()
            ports = tuple(
                Port(p.port, p.protocol) for p in _ports(router.spec.get("listeners", ()))
            )
        if not ports:
            warn(f"virtual service '{service}': its provider '{name}' has no listeners; skipped")
        return ports

    return _memo(ctx, ("service_ports", service), build)


def service_routes(ctx: MeshContext, service: str, port: Port) -> Resolved:
    """Routes serving (service, port) in App Mesh priority order, targets resolved."""

    def build(warn) -> tuple[ResolvedRoute, ...]:
        kind, name = service_provider(ctx, service)
        if kind == "virtualNode":
            target = Target(name, port.port, 1)
            return (ResolvedRoute(name, port.protocol, EMPTY, NO_PRIORITY, (target,)),)
        router = ctx.virtual_routers[name]
        applicable = _routes_for_port(router.routes, port)
        out = []
        for route_name, route_type, spec in applicable:
            label = f"{name}/{route_name}"
            body = spec[route_type]
            targets = _targets(ctx, label, body, port, warn)
            if not targets:
                warn(f"route {label}: no usable target; route skipped")
                continue
            priority = spec.get("priority")
            out.append(
                ResolvedRoute(
                    label,
                    ROUTE_TYPES[route_type],
                    body,
                    NO_PRIORITY if priority is None else int(priority),
                    targets,
                )
            )
        out.sort(key=lambda r: (r.priority, r.name))
        if not out:
            warn(
                f"virtual service '{service}' port {port.port}: virtual router '{name}' has no "
                f"usable {port.protocol} route"
            )
        return tuple(out)

    return _memo(ctx, ("service_routes", service, port.port, port.protocol), build)


def _routes_for_port(routes: FrozenDict, port: Port) -> list[tuple[str, str, FrozenDict]]:
    """Routes of a router that apply to one of its listeners.

    A route with `match.port` applies to that listener only. Without one, it applies to the
    listeners of its own protocol, or — when the router has none — of its family (HTTP-ish
    or TCP), so an httpRoute on a router with only an http2 listener still routes."""
    typed = []
    for route_name, spec in routes.items():
        route_type = next((t for t in ROUTE_TYPES if spec.get(t)), None)
        if route_type is not None:
            typed.append((route_name, route_type, spec))
    out = []
    for route_name, route_type, spec in typed:
        protocol = ROUTE_TYPES[route_type]
        same_family = (protocol == "tcp") == (port.protocol == "tcp")
        if not same_family:
            continue
        match_port = dig(spec, route_type, "match", "port")
        if match_port is not None:
            if int(match_port) == port.port:
                out.append((route_name, route_type, spec))
        elif protocol == port.protocol:
            out.append((route_name, route_type, spec))
    if not out:
        # Lenient fallback: no route of this listener's exact protocol and no port-pinned one.
        out = [
            (n, t, s)
            for n, t, s in typed
            if ((ROUTE_TYPES[t] == "tcp") == (port.protocol == "tcp"))
            and dig(s, t, "match", "port") is None
        ]
    return out


def _targets(ctx: MeshContext, label: str, body, port: Port, warn) -> tuple[Target, ...]:
    merged: dict[tuple[str, int], int] = {}
    for target in dig(body, "action", "weightedTargets", default=()):
        node = target["virtualNode"]
        if node not in ctx.virtual_nodes:
            warn(f"route {label}: target virtual node '{node}' does not exist; skipped")
            continue
        ports = node_ports(ctx, node)
        wanted = target.get("port")
        if wanted is None:
            if len(ports) == 1:
                wanted = ports[0].port
            elif any(p.port == port.port for p in ports):
                wanted = port.port
            else:
                warn(
                    f"route {label}: target virtual node '{node}' has {len(ports)} listeners "
                    "and the target names no port; skipped"
                )
                continue
        if not any(p.port == wanted for p in ports):
            warn(
                f"route {label}: target virtual node '{node}' has no listener on port {wanted}; "
                "skipped"
            )
            continue
        key = (node, int(wanted))
        merged[key] = merged.get(key, 0) + int(target.get("weight", 0))
    if merged and sum(merged.values()) == 0:
        warn(f"route {label}: every target has weight 0")
        return ()
    return tuple(Target(n, p, w) for (n, p), w in merged.items())


def listener_of(ctx: MeshContext, node: str, port: int) -> Port | None:
    return next((p for p in node_ports(ctx, node) if p.port == port), None)
