"""Envoy socket listeners: a virtual node's ingress and egress, a gateway's listeners.

Redirect mode (App Mesh's iptables model): one ingress listener on 15000 whose filter
chains match the original destination port (each `portMapping.port`), and one egress
listener on 15001 with a chain per destination port: HTTP ports route by Host/authority
(RDS `egress/<port>`), a TCP port proxies to its one TCP virtual service. With the mesh
egress filter ALLOW_ALL, anything else passes through to its original destination.
Explicit mode: an ingress listener per `portMapping` on its own port, and a loopback
egress listener per (backend, port); the ports are in the snapshot metadata.
"""

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from google.protobuf import wrappers_pb2

from workers.compiler import authz, names, tls, xds
from workers.compiler.frozen import dig
from workers.compiler.generators import Builder, rbac
from workers.compiler.generators.filters import (
    access_logs,
    http_connection_manager,
    stat_name,
    tcp_proxy,
)
from workers.compiler.plan import Egress, Ingress, Plan

ORIGINAL_DST = "envoy.filters.listener.original_dst"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"


def generate(plan: Plan, out: Builder) -> None:
    if plan.proxy.kind == "virtualGateway":
        _gateway(plan, out)
    elif plan.explicit:
        for ingress in plan.ingress:
            chains = _ingress_chains(plan, out, ingress, match_port=False)
            _add(
                out,
                names.ingress_listener(ingress.port.port),
                "0.0.0.0",
                ingress.listen_port,
                chains,
                inbound=True,
            )
        for egress in plan.egress:
            chain = _egress_chain(
                plan, egress, names.service_routes(egress.service, egress.port.port)
            )
            _add(
                out,
                names.egress_listener(egress.service, egress.port.port),
                "127.0.0.1",
                egress.listen_port,
                [chain],
                inbound=False,
            )
    else:
        _redirect(plan, out)


def _add(out, name, address, port, chains, *, inbound, default=None, original_dst=False):
    # No SO_REUSEPORT: a second proxy binding the same port (another explicit-mode proxy on
    # the host with the same declared ports) fails to bind, loudly, instead of silently
    # taking half of this one's connections.
    listener = listener_pb2.Listener(
        name=name,
        address=xds.socket(address, port),
        filter_chains=chains,
        traffic_direction=base_pb2.INBOUND if inbound else base_pb2.OUTBOUND,
        enable_reuse_port=wrappers_pb2.BoolValue(value=False),
    )
    filters = []
    if original_dst:
        filters.append(
            lc.ListenerFilter(
                name=ORIGINAL_DST, typed_config=xds.pack(original_dst_pb2.OriginalDst())
            )
        )
    if any(c.filter_chain_match.transport_protocol for c in chains):
        filters.append(
            lc.ListenerFilter(
                name=TLS_INSPECTOR, typed_config=xds.pack(tls_inspector_pb2.TlsInspector())
            )
        )
    listener.listener_filters.extend(filters)
    if default is not None:
        listener.default_filter_chain.CopyFrom(default)
    out.add(xds.LISTENER, name, listener)


def _redirect(plan: Plan, out: Builder) -> None:
    if plan.ingress:
        chains = []
        for ingress in plan.ingress:
            chains.extend(_ingress_chains(plan, out, ingress, match_port=True))
        _add(
            out,
            names.INGRESS,
            "0.0.0.0",
            plan.proxy.ingress_port,
            chains,
            inbound=True,
            original_dst=True,
        )
    chains = []
    by_port: dict[int, list[Egress]] = {}
    for egress in plan.egress:
        by_port.setdefault(egress.port.port, []).append(egress)
    for port in sorted(by_port):
        group = by_port[port]
        http = [e for e in group if e.port.protocol != "tcp"]
        tcp = [e for e in group if e.port.protocol == "tcp"]
        if http:
            chosen = _egress_chain(plan, http[0], names.egress_routes(port))
            skipped = tcp
        else:
            chosen = _egress_chain(plan, tcp[0], "")
            skipped = tcp[1:]
        for e in skipped:
            plan.warn(
                f"backend '{e.service}' (tcp, port {port}): redirect mode tells TCP services "
                f"apart by destination port only, and port {port} is taken; skipped"
            )
        chosen.filter_chain_match.destination_port.CopyFrom(xds.u32(port))
        chains.append(chosen)
    default = None
    if plan.allow_all:
        default = lc.FilterChain(
            name="passthrough",
            filters=[
                tcp_proxy(
                    "egress_passthrough",
                    [(names.PASSTHROUGH, 1)],
                    logs=access_logs(plan.access_log),
                )
            ],
        )
    if chains or default is not None:
        _add(
            out,
            names.EGRESS,
            "0.0.0.0",
            plan.proxy.egress_port,
            chains,
            inbound=False,
            default=default,
            original_dst=True,
        )


def _ingress_chains(plan: Plan, out: Builder, ingress: Ingress, *, match_port: bool):
    """One chain per listener port, or two under PERMISSIVE TLS (TLS and plaintext).

    With the mesh's automatic mTLS on, a listener without App Mesh TLS takes the mesh's
    mode over the workload identity (App Mesh TLS, where set, wins), and every chain that
    verifies client certificates admits only allowed callers (RBAC by SPIFFE id), and the
    app learns the caller's SPIFFE id (x-forwarded-client-cert). A PERMISSIVE plaintext
    chain carries no identity, so no authorization applies to it (and a forged
    x-forwarded-client-cert is dropped)."""
    port, spec = ingress.port, ingress.port.listener
    name = f"ingress_{port.port}"
    where = f"listener {port.port}"
    ctx = plan.ctx
    listener_tls = spec.get("tls")
    if ctx.mtls and not listener_tls:
        listener_tls = tls.mesh_listener_tls(ctx.mtls_mode)
    mode = dig(listener_tls, "mode", default="DISABLED")
    principals = authz.listener_principals(ctx, plan.proxy.name, listener_tls)
    if ctx.mtls and principals is None:
        plan.warn(authz.unauthorized_warning(where, listener_tls))
    kind = "tcp" if port.protocol == "tcp" else "http"
    logs = access_logs(plan.access_log, kind if ctx.mtls else "")

    def filters(authorize: bool) -> list:
        if port.protocol == "tcp":
            proxy = tcp_proxy(
                name,
                [(names.local_app(port.port), 1)],
                logs=logs,
                idle_timeout=xds.spec_duration(spec, "timeout", "tcp", "idle"),
            )
            if not authorize:
                return [proxy]
            return [rbac.network_filter(f"{name}_rbac", principals), proxy]
        idle = xds.spec_duration(spec, "timeout", port.protocol, "idle")
        return [
            http_connection_manager(
                name,
                rds=names.ingress_routes(port.port),
                logs=logs,
                stream_idle_timeout=idle,
                http_filters=[rbac.http_filter(f"{name}_rbac", principals)] if authorize else (),
                forward_client_identity=ctx.mtls,
            )
        ]

    def chain(suffix: str, transport_protocol: str, secure: bool) -> lc.FilterChain:
        match = lc.FilterChainMatch(transport_protocol=transport_protocol)
        if match_port:
            match.destination_port.CopyFrom(xds.u32(port.port))
        out_chain = lc.FilterChain(
            name=f"{name}{suffix}",
            filter_chain_match=match,
            filters=filters(secure and principals is not None),
        )
        if secure:
            out_chain.transport_socket.CopyFrom(
                tls.downstream(listener_tls, port.protocol, out.refs, where)
            )
        return out_chain

    if mode == "STRICT":
        return [chain("", "", True)]
    if mode == "PERMISSIVE":
        return [chain("_tls", "tls", True), chain("_plaintext", "raw_buffer", False)]
    return [chain("", "", False)]


def _egress_chain(plan: Plan, egress: Egress, rds: str) -> lc.FilterChain:
    name = f"egress_{stat_name(egress.service)}_{egress.port.port}"
    logs = access_logs(plan.access_log)
    if egress.port.protocol == "tcp":
        route = egress.routes[0]
        clusters = [(names.upstream(t.node, t.port), t.weight) for t in route.targets]
        idle = xds.spec_duration(route.body, "timeout", "idle")
        return lc.FilterChain(
            name=name, filters=[tcp_proxy(name, clusters, logs=logs, idle_timeout=idle)]
        )
    if rds.startswith("egress/"):  # redirect: one chain per port for all its HTTP services
        name = f"egress_{egress.port.port}"
    return lc.FilterChain(name=name, filters=[http_connection_manager(name, rds=rds, logs=logs)])


def _gateway(plan: Plan, out: Builder) -> None:
    logs = access_logs(plan.access_log)
    for gp in plan.gateway_ports:
        port, spec = gp.port, gp.port.listener
        name = f"gateway_{port.port}"
        hcm = http_connection_manager(
            name, rds=names.gateway_routes(port.port), logs=logs, strip_any_host_port=True
        )
        mode = dig(spec, "tls", "mode", default="DISABLED")
        where = f"gateway listener {port.port}"
        if mode == "STRICT":
            chains = [
                lc.FilterChain(
                    name=name,
                    filters=[hcm],
                    transport_socket=tls.downstream(spec["tls"], port.protocol, out.refs, where),
                )
            ]
        elif mode == "PERMISSIVE":
            chains = [
                lc.FilterChain(
                    name=f"{name}_tls",
                    filters=[hcm],
                    filter_chain_match=lc.FilterChainMatch(transport_protocol="tls"),
                    transport_socket=tls.downstream(spec["tls"], port.protocol, out.refs, where),
                ),
                lc.FilterChain(
                    name=f"{name}_plaintext",
                    filters=[hcm],
                    filter_chain_match=lc.FilterChainMatch(transport_protocol="raw_buffer"),
                ),
            ]
        else:
            chains = [lc.FilterChain(name=name, filters=[hcm])]
        _add(out, names.gateway_listener(port.port), "0.0.0.0", port.port, chains, inbound=True)
    for egress in plan.internal:
        name = names.internal(egress.service, egress.port.port)
        hcm = http_connection_manager(
            stat_name(name), logs=logs, rds=names.service_routes(egress.service, egress.port.port)
        )
        listener = listener_pb2.Listener(
            name=name,
            internal_listener=listener_pb2.Listener.InternalListenerConfig(),
            filter_chains=[lc.FilterChain(name=stat_name(name), filters=[hcm])],
            traffic_direction=base_pb2.OUTBOUND,
        )
        out.add(xds.LISTENER, name, listener)
        plan.metadata["bootstrap_extensions"] = ["envoy.bootstrap.internal_listener"]
