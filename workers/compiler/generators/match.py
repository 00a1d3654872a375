"""App Mesh route matches, retries and timeouts → Envoy route components (no I/O, no plan)."""

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import range_pb2

from workers.compiler import xds
from workers.compiler.frozen import dig

HTTP_RETRY_EVENTS = {
    "server-error": "5xx",
    "gateway-error": "gateway-error",
    "client-error": "retriable-4xx",  # App Mesh: HTTP 409
    "stream-error": "refused-stream",
}
TCP_RETRY_EVENTS = {"connection-error": "connect-failure"}
GRPC_RETRY_EVENTS = {
    e: e
    for e in ("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")
}


def string_matcher(match) -> string_pb2.StringMatcher | None:
    if match.get("exact") is not None:
        return string_pb2.StringMatcher(exact=match["exact"])
    if match.get("prefix") is not None:
        return string_pb2.StringMatcher(prefix=match["prefix"])
    if match.get("suffix") is not None:
        return string_pb2.StringMatcher(suffix=match["suffix"])
    if match.get("regex") is not None:
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match["regex"]))
    return None


def header(name: str, match, invert: bool = False) -> rc.HeaderMatcher:
    """exact / prefix / suffix / regex / range, or presence when no match is given."""
    out = rc.HeaderMatcher(name=name, invert_match=bool(invert))
    match = match or {}
    if match.get("range"):
        out.range_match.CopyFrom(
            range_pb2.Int64Range(start=int(match["range"]["start"]), end=int(match["range"]["end"]))
        )
    elif (matcher := string_matcher(match)) is not None:
        out.string_match.CopyFrom(matcher)
    else:
        out.present_match = True
    return out


def http_match(match, *, grpc: bool = False) -> rc.RouteMatch:
    """An HttpRouteMatch / HttpGatewayRouteMatch / GrpcRouteMatch → RouteMatch. The match's
    `port` picks the listener and `hostname` the virtual host; neither appears here."""
    match = match or {}
    out = rc.RouteMatch()
    if grpc:
        service, method = match.get("serviceName"), match.get("methodName")
        if service and method:
            out.path = f"/{service}/{method}"
        elif service:
            out.prefix = f"/{service}/"
        else:
            out.prefix = "/"
        out.grpc.CopyFrom(rc.RouteMatch.GrpcRouteMatchOptions())
        for item in match.get("metadata", ()):
            out.headers.append(header(item["name"], item.get("match"), item.get("invert", False)))
        return out
    if dig(match, "path", "exact") is not None:
        out.path = match["path"]["exact"]
    elif dig(match, "path", "regex") is not None:
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=match["path"]["regex"]))
    else:
        out.prefix = match.get("prefix") or "/"
    if match.get("method"):
        out.headers.append(header(":method", {"exact": match["method"]}))
    if match.get("scheme"):
        out.headers.append(header(":scheme", {"exact": match["scheme"]}))
    for item in match.get("headers", ()):
        out.headers.append(header(item["name"], item.get("match"), item.get("invert", False)))
    for item in match.get("queryParameters", ()):
        query = rc.QueryParameterMatcher(name=item["name"])
        exact = dig(item, "match", "exact")
        if exact is not None:
            query.string_match.CopyFrom(string_pb2.StringMatcher(exact=exact))
        else:
            query.present_match = True
        out.query_parameters.append(query)
    return out


def retry_policy(spec) -> rc.RetryPolicy | None:
    """App Mesh retry events → Envoy retry_on (sorted, comma-separated)."""
    if not spec:
        return None
    events = set()
    for key, table in (
        ("httpRetryEvents", HTTP_RETRY_EVENTS),
        ("tcpRetryEvents", TCP_RETRY_EVENTS),
        ("grpcRetryEvents", GRPC_RETRY_EVENTS),
    ):
        events.update(table[e] for e in spec.get(key, ()) if e in table)
    if not events:
        return None
    out = rc.RetryPolicy(retry_on=",".join(sorted(events)))
    out.num_retries.CopyFrom(xds.u32(spec.get("maxRetries", 0)))
    per_try = xds.duration(spec.get("perRetryTimeout"))
    if per_try is not None:
        out.per_try_timeout.CopyFrom(per_try)
    return out


def apply_timeouts(action: rc.RouteAction, timeout) -> None:
    """perRequest → the route timeout, idle → the stream idle timeout of the route."""
    per_request = xds.duration(dig(timeout, "perRequest"))
    if per_request is not None:
        action.timeout.CopyFrom(per_request)
    idle = xds.duration(dig(timeout, "idle"))
    if idle is not None:
        action.idle_timeout.CopyFrom(idle)


def clusters_action(targets: list[tuple[str, int]]) -> rc.RouteAction:
    if len(targets) == 1:
        return rc.RouteAction(cluster=targets[0][0])
    return rc.RouteAction(
        weighted_clusters=rc.WeightedCluster(
            clusters=[
                rc.WeightedCluster.ClusterWeight(name=n, weight=xds.u32(w)) for n, w in targets
            ]
        )
    )
