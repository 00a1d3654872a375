"""ClusterLoadAssignments (EDS) for every EDS cluster, possibly empty.

Endpoints come from the context (registered by proxies, static, Cloud Map, …), versioned
apart from the rest: endpoint churn changes only these resources. `ipPreference` (the
Cloud Map one, else the mesh's) filters or orders addresses by family.
"""

import ipaddress

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.endpoint.v3 import endpoint_pb2

from workers.compiler import xds
from workers.compiler.context import Endpoint
from workers.compiler.frozen import dig
from workers.compiler.generators import Builder
from workers.compiler.plan import Plan

HEALTH = {
    "HEALTHY": health_check_pb2.HEALTHY,
    "UNHEALTHY": health_check_pb2.UNHEALTHY,
    "DRAINING": health_check_pb2.DRAINING,
    "UNKNOWN": health_check_pb2.UNKNOWN,
}


def generate(plan: Plan, out: Builder) -> None:
    for name, cluster in sorted(out.resources[xds.CLUSTER].items()):
        if cluster.type != cluster_pb2.Cluster.EDS:
            continue
        upstream = plan.upstreams.get(name)
        if upstream is None:
            out.add(xds.ENDPOINT, name, endpoint_pb2.ClusterLoadAssignment(cluster_name=name))
            continue
        spec = plan.ctx.virtual_nodes[upstream.node]
        preference = dig(spec, "serviceDiscovery", "awsCloudMap", "ipPreference") or dig(
            plan.ctx.mesh, "serviceDiscovery", "ipPreference"
        )
        endpoints = _by_preference(
            plan.ctx.endpoints_of(upstream.node, upstream.port.port), preference
        )
        key = ("cla", name, endpoints)
        # gRPC drops a locality without a weight ("contains no localities"); Envoy ignores
        # locality weights unless locality-weighted balancing is on.
        weighted = plan.proxy.consumer == "grpc"
        out.add(
            xds.ENDPOINT,
            name,
            out.shared(key, lambda _, n=name, e=endpoints, w=weighted: _cla(n, e, w)),
        )


def _family(address: str) -> int:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return 0  # a hostname: keep it whatever the preference


def _by_preference(endpoints: tuple[Endpoint, ...], preference) -> tuple[Endpoint, ...]:
    if preference == "IPv4_ONLY":
        return tuple(e for e in endpoints if _family(e.address) in (0, 4))
    if preference == "IPv6_ONLY":
        return tuple(e for e in endpoints if _family(e.address) in (0, 6))
    if preference in ("IPv4_PREFERRED", "IPv6_PREFERRED"):
        wanted = 4 if preference == "IPv4_PREFERRED" else 6
        preferred = tuple(e for e in endpoints if _family(e.address) in (0, wanted))
        return preferred or endpoints
    return endpoints


def _cla(
    name: str, endpoints: tuple[Endpoint, ...], weighted: bool = False
) -> endpoint_pb2.ClusterLoadAssignment:
    lb = [
        ec.LbEndpoint(
            endpoint=ec.Endpoint(address=xds.socket(e.address, e.port)),
            health_status=HEALTH[e.health],
        )
        for e in endpoints
    ]
    extra = (
        {"locality": base_pb2.Locality(), "load_balancing_weight": xds.u32(1)} if weighted else {}
    )
    locality = [ec.LocalityLbEndpoints(lb_endpoints=lb, **extra)] if lb else []
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=locality)
