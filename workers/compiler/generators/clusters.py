"""Clusters (CDS): one per (virtual node, port), the local app, passthrough, internal hops.

Where App Mesh applies a listener's settings:
- `healthCheck` and `outlierDetection` of a virtual node's listener configure the *callers'*
  cluster for that (node, port): App Mesh's client Envoys run the active health checks
  (passed through the callee's Envoy to its app) and eject outliers.
- `connectionPool` of a virtual node's listener bounds the callee's own local-app cluster
  (circuit breakers); a gateway listener's pool bounds the gateway's upstream clusters
  reached through that listener.
- Discovery: Cloud Map, registered/static endpoints and no `serviceDiscovery` at all are
  EDS; DNS is STRICT_DNS for responseType ENDPOINTS and LOGICAL_DNS for LOADBALANCER (the
  default). Consumer `grpc` supports only EDS and LOGICAL_DNS, so DNS is LOGICAL_DNS there.
  `ipPreference` (the node's, else the mesh's) sets the DNS lookup family.
"""

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from envoy.type.v3 import http_pb2

from workers.compiler import names, tls, xds
from workers.compiler.frozen import dig
from workers.compiler.generators import Builder
from workers.compiler.plan import Plan, Upstream

Cluster = cluster_pb2.Cluster
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
DNS_FAMILY = {
    "IPv4_ONLY": Cluster.V4_ONLY,
    "IPv6_ONLY": Cluster.V6_ONLY,
    "IPv4_PREFERRED": Cluster.V4_PREFERRED,
    "IPv6_PREFERRED": Cluster.AUTO,  # Envoy's AUTO: IPv6 first, then IPv4
}


def generate(plan: Plan, out: Builder) -> None:
    used = None
    if plan.proxy.consumer == "grpc":  # gRPC clients cannot use TCP backends' clusters
        used = {c for e in plan.egress if e.port.protocol != "tcp" for c in e.clusters}
    for name, upstream in sorted(plan.upstreams.items()):
        if used is not None and name not in used:
            continue
        out.add(
            xds.CLUSTER,
            name,
            out.shared(("upstream", upstream), lambda refs, u=upstream: _upstream(plan, u, refs)),
        )
    if plan.proxy.consumer != "envoy":
        return
    for ingress in plan.ingress:
        key = ("local", ingress.port, ingress.app_port)
        cluster = out.shared(key, lambda _, i=ingress: _local(i.port, i.app_port))
        out.add(xds.CLUSTER, cluster.name, cluster)
    if plan.allow_all and not plan.explicit and plan.proxy.kind == "virtualNode":
        out.add(
            xds.CLUSTER,
            names.PASSTHROUGH,
            out.shared(
                ("passthrough",),
                lambda _: Cluster(
                    name=names.PASSTHROUGH,
                    type=Cluster.ORIGINAL_DST,
                    lb_policy=Cluster.CLUSTER_PROVIDED,
                ),
            ),
        )
    for egress in plan.internal:
        name = names.internal(egress.service, egress.port.port)
        protocol = egress.port.protocol
        cluster = out.shared(
            ("internal", name, protocol), lambda _, n=name, p=protocol: _internal(n, p)
        )
        out.add(xds.CLUSTER, name, cluster)


def _http_protocol(cluster: Cluster, protocol: str) -> None:
    if protocol in ("http2", "grpc"):
        options = hpo.HttpProtocolOptions(
            explicit_http_config=hpo.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        cluster.typed_extension_protocol_options[HTTP_OPTIONS].CopyFrom(xds.pack(options))


def _upstream(plan: Plan, up: Upstream, refs) -> Cluster:
    ctx = plan.ctx
    name = names.upstream(up.node, up.port.port)
    spec = ctx.virtual_nodes[up.node]
    cluster = Cluster(name=name)
    dns = dig(spec, "serviceDiscovery", "dns")
    preference = dig(dns, "ipPreference") or dig(ctx.mesh, "serviceDiscovery", "ipPreference")
    if dns:
        logical = dns.get("responseType", "LOADBALANCER") == "LOADBALANCER"
        cluster.type = (
            Cluster.LOGICAL_DNS if logical or refs.consumer == "grpc" else Cluster.STRICT_DNS
        )
        cluster.dns_lookup_family = DNS_FAMILY.get(preference, Cluster.V4_ONLY)
        cluster.load_assignment.CopyFrom(
            endpoint_pb2.ClusterLoadAssignment(
                cluster_name=name,
                endpoints=[
                    ec.LocalityLbEndpoints(
                        lb_endpoints=[
                            ec.LbEndpoint(
                                endpoint=ec.Endpoint(
                                    address=xds.socket(dns["hostname"], up.port.port)
                                )
                            )
                        ]
                    )
                ],
            )
        )
    else:
        cluster.type = Cluster.EDS
        cluster.eds_cluster_config.eds_config.CopyFrom(xds.ads())
    _http_protocol(cluster, up.port.protocol)
    listener = up.port.listener
    check = listener.get("healthCheck")
    if check:
        cluster.health_checks.append(_health_check(check))
    outliers = listener.get("outlierDetection")
    if outliers:
        cluster.outlier_detection.CopyFrom(
            outlier_detection_pb2.OutlierDetection(
                consecutive_5xx=xds.u32(outliers["maxServerErrors"]),
                interval=xds.duration(outliers["interval"]),
                base_ejection_time=xds.duration(outliers["baseEjectionDuration"]),
                max_ejection_percent=xds.u32(outliers["maxEjectionPercent"]),
            )
        )
    if up.pool:
        cluster.circuit_breakers.CopyFrom(_circuit_breakers(up.pool))
    if up.tls:
        cluster.transport_socket.CopyFrom(
            tls.upstream(up.tls, up.port.protocol, refs, f"cluster {name}")
        )
    return cluster


def _health_check(check) -> health_check_pb2.HealthCheck:
    out = health_check_pb2.HealthCheck(
        timeout=xds.millis(check["timeoutMillis"]),
        interval=xds.millis(check["intervalMillis"]),
        healthy_threshold=xds.u32(check["healthyThreshold"]),
        unhealthy_threshold=xds.u32(check["unhealthyThreshold"]),
    )
    protocol = check["protocol"]
    if protocol == "tcp":
        out.tcp_health_check.CopyFrom(health_check_pb2.HealthCheck.TcpHealthCheck())
    elif protocol == "grpc":
        out.grpc_health_check.CopyFrom(health_check_pb2.HealthCheck.GrpcHealthCheck())
    else:
        out.http_health_check.CopyFrom(
            health_check_pb2.HealthCheck.HttpHealthCheck(
                path=check.get("path") or "/",
                codec_client_type=http_pb2.HTTP2 if protocol == "http2" else http_pb2.HTTP1,
            )
        )
    return out


def _circuit_breakers(pool) -> circuit_breaker_pb2.CircuitBreakers:
    """connectionPool (one protocol key) → default-priority thresholds."""
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds()
    limits = next(iter(pool.values()), {}) or {}
    if limits.get("maxConnections") is not None:
        thresholds.max_connections.CopyFrom(xds.u32(limits["maxConnections"]))
    if limits.get("maxPendingRequests") is not None:
        thresholds.max_pending_requests.CopyFrom(xds.u32(limits["maxPendingRequests"]))
    if limits.get("maxRequests") is not None:
        thresholds.max_requests.CopyFrom(xds.u32(limits["maxRequests"]))
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[thresholds])


def _local(port, app_port: int) -> Cluster:
    name = names.local_app(port.port)
    cluster = Cluster(
        name=name,
        type=Cluster.STATIC,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                ec.LocalityLbEndpoints(
                    lb_endpoints=[
                        ec.LbEndpoint(
                            endpoint=ec.Endpoint(address=xds.socket("127.0.0.1", app_port))
                        )
                    ]
                )
            ],
        ),
    )
    _http_protocol(cluster, port.protocol)
    pool = port.listener.get("connectionPool")
    if pool:
        cluster.circuit_breakers.CopyFrom(_circuit_breakers(pool))
    return cluster


def _internal(name: str, protocol: str) -> Cluster:
    """A gateway's hop into an internal listener that applies a router's routes."""
    address = address_pb2.Address(
        envoy_internal_address=address_pb2.EnvoyInternalAddress(server_listener_name=name)
    )
    cluster = Cluster(
        name=name,
        type=Cluster.STATIC,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                ec.LocalityLbEndpoints(
                    lb_endpoints=[ec.LbEndpoint(endpoint=ec.Endpoint(address=address))]
                )
            ],
        ),
    )
    _http_protocol(cluster, protocol)
    return cluster
