"""Listeners for proxyless gRPC (consumer `grpc`).

Clients: one `api_listener` per backend virtual service name and `name:port` (what a
client dials as `xds:///name` or `xds:///name:port`), each an HTTP connection manager with
the router filter and RDS `service/<name>/<port>`; the bare name takes the service's
lowest grpc port, else its lowest HTTP port. Servers: one listener per HTTP-family
`portMapping`, named as gRPC's xDS server looks it up, with the listener's TLS through
certificate providers. A gRPC server cannot accept TLS and plaintext on one port, so
PERMISSIVE serves plaintext (with a warning), which no existing client breaks on. Under
the mesh's automatic mTLS every caller sends TLS, so its PERMISSIVE serves TLS only, and
the RBAC HTTP filter admits the allowed callers (as on an Envoy ingress, authz.py).
"""

from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from workers.compiler import authz, names, tls, xds
from workers.compiler.frozen import dig
from workers.compiler.generators import Builder, rbac
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
    where = f"listener {port.port}"
    listener_tls = port.listener.get("tls")
    automatic = plan.ctx.mtls and not listener_tls
    if automatic:
        listener_tls = tls.mesh_listener_tls(plan.ctx.mtls_mode)
    mode = dig(listener_tls, "mode", default="DISABLED")
    http_filters = []
    if mode == "PERMISSIVE" and automatic:
        # Every mesh caller sends TLS under the mesh's mTLS, so the server takes TLS only.
        plan.warn(
            f"{where}: gRPC servers cannot accept TLS and plaintext on one port; the mesh's "
            "PERMISSIVE mTLS serves TLS only"
        )
        mode = "STRICT"
    elif mode == "PERMISSIVE":
        plan.warn(
            f"{where}: gRPC servers cannot accept TLS and plaintext on one port; "
            "PERMISSIVE serves plaintext"
        )
    principals = authz.listener_principals(
        plan.ctx, plan.proxy.name, listener_tls if mode == "STRICT" else None
    )
    if principals is not None:
        http_filters.append(rbac.http_filter(f"inbound_{port.port}_rbac", principals))
    elif plan.ctx.mtls:
        plan.warn(authz.unauthorized_warning(where, listener_tls))
    chain = lc.FilterChain(
        name=f"inbound_{port.port}",
        filters=[
            http_connection_manager(
                f"inbound_{port.port}", route_config=routes, http_filters=http_filters
            )
        ],
    )
    if mode == "STRICT":
        chain.transport_socket.CopyFrom(
            tls.downstream(listener_tls, port.protocol, out.refs, where)
        )
    listener = listener_pb2.Listener(
        name=name, address=xds.socket("0.0.0.0", port.port), filter_chains=[chain]
    )
    out.add(xds.LISTENER, name, listener)
