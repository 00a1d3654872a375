"""Route configurations (RDS).

- `ingress/<port>`: a virtual node's HTTP listener → its local app, with the listener's
  per-request timeout.
- `egress/<port>` (redirect mode): a virtual host per backend virtual service answering
  on that port, domains `name` and `name:port`; ALLOW_ALL adds `*` → passthrough.
- `service/<service>/<port>`: one virtual service port's routes for any authority, used by
  explicit-mode egress listeners, gRPC api_listeners and a gateway's internal hops.
- `gateway/<port>`: a gateway listener's gateway routes, a virtual host per hostname match.

Route messages depend only on the mesh, so they are built once per mesh and shared.
"""

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from workers.compiler import names, xds
from workers.compiler.frozen import dig
from workers.compiler.generators import Builder
from workers.compiler.generators.match import (
    apply_timeouts,
    clusters_action,
    http_match,
    retry_policy,
)
from workers.compiler.graph import ResolvedRoute
from workers.compiler.plan import Egress, GatewayPort, GatewayRoute, Plan


def generate(plan: Plan, out: Builder) -> None:
    if plan.proxy.kind == "virtualGateway":
        for gp in plan.gateway_ports:
            _add(out, names.gateway_routes(gp.port.port), _gateway_hosts(out, gp))
        for egress in plan.internal:
            _service(out, egress)
        return
    if plan.proxy.consumer == "envoy":
        _ingress(plan, out)
    if plan.explicit or plan.proxy.consumer == "grpc":
        for egress in plan.egress:
            if egress.port.protocol != "tcp":
                _service(out, egress)
        return
    by_port: dict[int, list[Egress]] = {}
    for egress in plan.egress:
        if egress.port.protocol != "tcp":
            by_port.setdefault(egress.port.port, []).append(egress)
    for port, group in sorted(by_port.items()):
        hosts = [
            _host(out, e, (e.service, f"{e.service}:{port}"))
            for e in sorted(group, key=lambda e: e.service)
        ]
        if plan.allow_all:
            hosts.append(_passthrough_host(out))
        key = (tuple((e.service, e.port, e.routes) for e in group), plan.allow_all)
        _add(out, names.egress_routes(port), hosts, key)


def _add(out: Builder, name: str, hosts: list[rc.VirtualHost], key: tuple | None = None) -> None:
    """`key` (the inputs of every host) lets proxies with the same hosts share one message."""
    if key is None:
        config = route_pb2.RouteConfiguration(name=name, virtual_hosts=hosts)
    else:
        config = out.shared(
            ("route_config", name) + key,
            lambda _: route_pb2.RouteConfiguration(name=name, virtual_hosts=hosts),
        )
    out.add(xds.ROUTE, name, config)


def _ingress(plan: Plan, out: Builder) -> None:
    for ingress in plan.ingress:
        port = ingress.port
        if port.protocol == "tcp":
            continue
        per_request = dig(port.listener, "timeout", port.protocol, "perRequest")

        def build(_, number=port.port, per_request=per_request):
            action = rc.RouteAction(cluster=names.local_app(number))
            timeout = xds.duration(per_request)
            if timeout is not None:
                action.timeout.CopyFrom(timeout)
            route = rc.Route(name="local", match=rc.RouteMatch(prefix="/"), route=action)
            return rc.VirtualHost(name="local", domains=["*"], routes=[route])

        # Keyed by what the message holds, so nodes with the same port share it.
        key = (port.port, per_request)
        host = out.shared(("ingress_host",) + key, build)
        _add(out, names.ingress_routes(port.port), [host], key)


def _service(out: Builder, egress: Egress) -> None:
    host = _host(out, egress, ("*",))
    key = (egress.service, egress.port, egress.routes)
    _add(out, names.service_routes(egress.service, egress.port.port), [host], key)


def _host(out: Builder, egress: Egress, domains: tuple[str, ...]) -> rc.VirtualHost:
    def build(_):
        routes = [_route(out, r) for r in egress.routes]
        return rc.VirtualHost(name=egress.service, domains=list(domains), routes=routes)

    return out.shared(("host", egress.service, egress.port, egress.routes, domains), build)


def _passthrough_host(out: Builder) -> rc.VirtualHost:
    def build(_):
        route = rc.Route(
            name="passthrough",
            match=rc.RouteMatch(prefix="/"),
            route=rc.RouteAction(cluster=names.PASSTHROUGH),
        )
        return rc.VirtualHost(name="allow_any", domains=["*"], routes=[route])

    return out.shared(("passthrough_host",), build)


def _route(out: Builder, resolved: ResolvedRoute) -> rc.Route:
    def build(_):
        body = resolved.body
        action = clusters_action(
            [(names.upstream(t.node, t.port), t.weight) for t in resolved.targets]
        )
        apply_timeouts(action, body.get("timeout"))
        retry = retry_policy(body.get("retryPolicy"))
        # gRPC NACKs num_retries 0, which Envoy reads as "no retries": leave the policy out
        # (with no num_retries gRPC would retry once).
        if retry is not None and (out.plan.proxy.consumer != "grpc" or retry.num_retries.value):
            action.retry_policy.CopyFrom(retry)
        match = http_match(body.get("match"), grpc=resolved.protocol == "grpc")
        return rc.Route(name=resolved.name, match=match, route=action)

    return out.shared(("route", resolved), build)


# ---------------------------------------------------------------- gateway


def _gateway_hosts(out: Builder, gp: GatewayPort) -> list[rc.VirtualHost]:
    """A virtual host per hostname match. Envoy picks one virtual host per request (exact
    before the longest suffix before `*`), so each host also carries every route whose
    hostname match covers it and every route without one, in priority order."""
    exact, suffixes = set(), set()
    for r in gp.routes:
        host = dig(r.body, "match", "hostname") or {}
        if host.get("exact"):
            exact.add(host["exact"].lower())
        elif host.get("suffix"):
            suffixes.add(host["suffix"].lower())

    def covers(route: GatewayRoute, name: str | None, suffix: str | None) -> bool:
        host = dig(route.body, "match", "hostname") or {}
        if host.get("exact"):
            return name is not None and host["exact"].lower() == name
        if host.get("suffix"):
            target = name if name is not None else suffix
            return target is not None and target.endswith(host["suffix"].lower())
        return True

    hosts = []
    for name in sorted(exact):
        routes = [r for r in gp.routes if covers(r, name, None)]
        hosts.append(_gateway_host(out, name, [name], routes))
    for suffix in sorted(suffixes):
        routes = [r for r in gp.routes if covers(r, None, suffix)]
        hosts.append(_gateway_host(out, f"*{suffix}", [f"*{suffix}"], routes))
    hosts.append(_gateway_host(out, "*", ["*"], [r for r in gp.routes if covers(r, None, None)]))
    return [h for h in hosts if h.routes]


def _gateway_host(out: Builder, name: str, domains: list[str], routes) -> rc.VirtualHost:
    return rc.VirtualHost(
        name=name, domains=domains, routes=[_gateway_route(out, r) for r in routes]
    )


def _gateway_route(out: Builder, route: GatewayRoute) -> rc.Route:
    def build(_):
        body = route.body
        action = rc.RouteAction(cluster=route.cluster)
        rewrite = dig(body, "action", "rewrite") or {}
        if dig(rewrite, "hostname", "defaultTargetHostname", default="ENABLED") == "ENABLED":
            action.host_rewrite_literal = route.service
        match = http_match(body.get("match"), grpc=route.protocol == "grpc")
        if route.protocol != "grpc":
            if match.HasField("path") and dig(rewrite, "path", "exact"):
                action.prefix_rewrite = rewrite["path"]["exact"]
            elif match.HasField("prefix"):
                prefix = rewrite.get("prefix") or {}
                if prefix.get("value"):
                    action.prefix_rewrite = prefix["value"]
                elif prefix.get("defaultPrefix", "ENABLED") == "ENABLED":
                    action.prefix_rewrite = "/"
        return rc.Route(name=route.name, match=match, route=action)

    return out.shared(("gateway_route", route), build)
