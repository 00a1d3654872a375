"""Network filters the listener generators share: HTTP connection manager, TCP proxy,
access logs."""

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, substitution_format_string_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import struct_pb2

from workers.compiler.xds import ads, pack

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
ROUTER = "envoy.filters.http.router"


# Envoy's default access log line, which a log under authorization extends.
DEFAULT_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)
# What a log line must carry where RBAC may deny: why (an HTTP denial's response code
# details, a TCP denial's connection termination details) and who asked (the caller's
# SPIFFE id).
AUTHZ_LOG_FIELDS = {
    "http": (
        ("responseCodeDetails", "%RESPONSE_CODE_DETAILS%"),
        ("peer", "%DOWNSTREAM_PEER_URI_SAN%"),
    ),
    "tcp": (
        ("terminationDetails", "%CONNECTION_TERMINATION_DETAILS%"),
        ("peer", "%DOWNSTREAM_PEER_URI_SAN%"),
    ),
}


def access_logs(file_spec, authz: str = "") -> list[accesslog_pb2.AccessLog]:
    """App Mesh's file access log: a path and an optional text or json format. `authz`
    ("http" or "tcp") adds the authorization fields to the format where it lacks them."""
    if not file_spec:
        return []
    log = file_pb2.FileAccessLog(path=file_spec["path"])
    fmt = file_spec.get("format") or {}
    extra = AUTHZ_LOG_FIELDS.get(authz, ())
    if fmt.get("text") is not None or (extra and not fmt.get("json")):
        text = fmt["text"] if fmt.get("text") is not None else DEFAULT_LOG_FORMAT
        missing = " ".join(f"{key}={op}" for key, op in extra if op not in text)
        if missing:
            body = text.removesuffix("\n")
            text = f"{body} {missing}\n" if body else f"{missing}\n"
        log.log_format.CopyFrom(
            substitution_format_string_pb2.SubstitutionFormatString(
                text_format_source=base_pb2.DataSource(inline_string=text)
            )
        )
    elif fmt.get("json"):
        fields = struct_pb2.Struct()
        for pair in fmt["json"]:
            fields[pair["key"]] = pair["value"]
        values = [str(pair["value"]) for pair in fmt["json"]]
        for key, operator in extra:
            if key not in fields and not any(operator in value for value in values):
                fields[key] = operator
        log.log_format.CopyFrom(
            substitution_format_string_pb2.SubstitutionFormatString(json_format=fields)
        )
    return [accesslog_pb2.AccessLog(name="envoy.access_loggers.file", typed_config=pack(log))]


def http_connection_manager(
    stat_prefix: str,
    *,
    rds: str | None = None,
    route_config: route_pb2.RouteConfiguration | None = None,
    logs=(),
    stream_idle_timeout=None,
    strip_any_host_port: bool = False,
    http_filters=(),
    forward_client_identity: bool = False,
) -> listener_components_pb2.Filter:
    """`http_filters` run before the router (authorization). `forward_client_identity`
    tells the app who called: the verified client certificate's URI SAN in an
    x-forwarded-client-cert header, one a caller sent itself being dropped."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        http_filters=[
            *http_filters,
            hcm_pb2.HttpFilter(name=ROUTER, typed_config=pack(router_pb2.Router())),
        ],
        access_log=list(logs),
    )
    if forward_client_identity:
        manager.forward_client_cert_details = hcm_pb2.HttpConnectionManager.SANITIZE_SET
        manager.set_current_client_cert_details.uri = True
    if strip_any_host_port:  # a oneof member: set only when wanted
        manager.strip_any_host_port = True
    if rds is not None:
        manager.rds.CopyFrom(hcm_pb2.Rds(config_source=ads(), route_config_name=rds))
    elif route_config is not None:
        manager.route_config.CopyFrom(route_config)
    if stream_idle_timeout is not None:
        manager.stream_idle_timeout.CopyFrom(stream_idle_timeout)
    return listener_components_pb2.Filter(name=HCM, typed_config=pack(manager))


def tcp_proxy(
    stat_prefix: str, clusters: list[tuple[str, int]], *, logs=(), idle_timeout=None
) -> listener_components_pb2.Filter:
    """The TCP proxy; an RBAC network filter, where one applies, goes before it."""
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, access_log=list(logs))
    if len(clusters) == 1:
        proxy.cluster = clusters[0][0]
    else:
        proxy.weighted_clusters.CopyFrom(
            tcp_proxy_pb2.TcpProxy.WeightedCluster(
                clusters=[
                    tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(name=name, weight=weight)
                    for name, weight in clusters
                ]
            )
        )
    if idle_timeout is not None:
        proxy.idle_timeout.CopyFrom(idle_timeout)
    return listener_components_pb2.Filter(name=TCP_PROXY, typed_config=pack(proxy))


def stat_name(name: str) -> str:
    return name.replace("/", "_").replace(":", "_")
