"""Small helpers over the xds-protos messages every generator uses."""

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from workers.compiler.frozen import dig

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# The order an xDS server sends types in (make-before-break).
TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
MESSAGE_TYPES = {
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    SECRET: secret_pb2.Secret,
}


def pack(message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message, deterministic=True)
    return out


def duration(spec) -> duration_pb2.Duration | None:
    """App Mesh Duration {unit: s|ms, value} → protobuf Duration (None when absent)."""
    if not spec or spec.get("value") is None:
        return None
    value = int(spec["value"])
    millis = value if spec.get("unit") == "ms" else value * 1000
    return duration_pb2.Duration(seconds=millis // 1000, nanos=(millis % 1000) * 1_000_000)


def millis(ms) -> duration_pb2.Duration:
    ms = int(ms)
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def u32(value) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=min(int(value), 2**32 - 1))


def ads() -> config_source_pb2.ConfigSource:
    """Every dynamic resource comes over the one ADS stream the agent holds."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def socket(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=int(port))
    )


def spec_duration(spec, *path: str) -> duration_pb2.Duration | None:
    return duration(dig(spec, *path))
