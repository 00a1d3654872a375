"""Listeners for proxyless gRPC (consumer `grpc`).

Clients: one `api_listener` per backend virtual service name and `name:port` (what a
client dials as `xds:///name` or `xds:///name:port`), each an HTTP connection manager with
the router filter and RDS `service/<name>/<port>`; the bare name takes the service's
lowest grpc port, else its lowest HTTP port. Servers: one listener per HTTP-family
`portMapping`, named as gRPC's xDS server looks it up, with the listener's TLS through
certificate providers. A gRPC server cannot accept TLS and plaintext on one port, so
PERMISSIVE serves plaintext (with a warning), which no existing client breaks on.
"""

from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from workers.compiler import names, tls, xds
from workers.compiler.frozen import dig
from workers.compiler.generators import Builder
from workers.compiler.generators.filters import http_connection_manager, stat_name
from workers.compiler.plan import Plan


def generate(plan: Plan, out: Builder) -> None:
    first_port: dict[str, tuple[str, int]] = {}
    for egress in plan.egress:
        if egress.port.protocol == "tcp":
            plan.warn(
                f"backend '{egress.service}' port {egress.port.port} is tcp, which gRPC clients "
                "cannot use; skipped"
            )
            continue
        # The bare name takes the service's lowest grpc port, else its lowest HTTP port.
        best = first_port.get(egress.service)
        if best is None or (egress.port.protocol == "grpc" and best[0] != "grpc"):
            first_port[egress.service] = (egress.port.protocol, egress.port.port)
        rds = names.service_routes(egress.service, egress.port.port)
        _api_listener(out, f"{egress.service}:{egress.port.port}", rds)
    for service, (_, port) in sorted(first_port.items()):
        _api_listener(out, service, names.service_routes(service, port))
    for ingress in plan.ingress:
        _server_listener(plan, out, ingress.port)


def _api_listener(out: Builder, name: str, rds: str) -> None:
    hcm = http_connection_manager(stat_name(name), rds=rds)
    listener = listener_pb2.Listener(name=name, api_listener=api_listener_pb2.ApiListener())
    listener.api_listener.api_listener.CopyFrom(hcm.typed_config)
    out.add(xds.LISTENER, name, listener)


def _server_listener(plan: Plan, out: Builder, port) -> None:
    if port.protocol == "tcp":
        return
    name = names.grpc_server_listener(port.port)
    routes = route_pb2.RouteConfiguration(
        name=f"inbound/{port.port}",
        virtual_hosts=[
            rc.VirtualHost(
                name="inbound",
                domains=["*"],
                routes=[
                    rc.Route(
                        match=rc.RouteMatch(prefix="/"),
                        non_forwarding_action=rc.NonForwardingAction(),
                    )
                ],
            )
        ],
    )
    chain = lc.FilterChain(
        name=f"inbound_{port.port}",
        filters=[http_connection_manager(f"inbound_{port.port}", route_config=routes)],
    )
    mode = dig(port.listener, "tls", "mode", default="DISABLED")
    if mode == "STRICT":
        chain.transport_socket.CopyFrom(
            tls.downstream(port.listener["tls"], port.protocol, out.refs, f"listener {port.port}")
        )
    elif mode == "PERMISSIVE":
        plan.warn(
            f"listener {port.port}: gRPC servers cannot accept TLS and plaintext on one port; "
            "PERMISSIVE serves plaintext"
        )
    listener = listener_pb2.Listener(
        name=name, address=xds.socket("0.0.0.0", port.port), filter_chains=[chain]
    )
    out.add(xds.LISTENER, name, listener)
