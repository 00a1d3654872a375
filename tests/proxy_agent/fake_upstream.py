"""A small state-of-the-world ADS server standing in for the control plane, plus builders
of the few Envoy resources the relay tests serve.

`FakeAds` serves whatever `set()` was last given per type, to every stream that subscribes
(listeners and clusters: all; others: the names asked for), skips a type whose first
request already holds the current version (as workers/xds/sotw.py does), ignores stale
nonces, and records every request so a test can read ACKs and NACKs as the agent forwarded
them. It runs on gRPC's thread pool, so it serves an agent in this process or another.
"""

from __future__ import annotations

import itertools
import queue
import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, duration_pb2

from proxy_agent.relay import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, WILDCARD_TYPES

ADS = "envoy.service.discovery.v3.AggregatedDiscoveryService"


def pack(message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message, deterministic=True)
    return out


@dataclass
class _TypeState:
    names: frozenset | None = None
    client_version: str = ""
    responded: bool = False
    sent_version: str = ""
    sent_names: frozenset | None = None
    nonce: str = ""


@dataclass
class _Stream:
    id: int
    out: queue.Queue = field(default_factory=queue.Queue)
    types: dict = field(default_factory=dict)
    node_id: str = ""


class FakeAds:
    def __init__(self, port: int = 0) -> None:
        self.state: dict[str, tuple[str, dict[str, any_pb2.Any]]] = {}
        self.requests: list[tuple[int, discovery_pb2.DiscoveryRequest]] = []
        self.streams: dict[int, _Stream] = {}
        self._ids = itertools.count(1)
        self._nonces = itertools.count(1)
        self._lock = threading.RLock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        handler = grpc.method_handlers_generic_handler(
            ADS,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self._serve,
                    request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                    response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString,
                )
            },
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None)

    # ------------------------------------------------------------ config

    def set(self, type_url: str, version: str, resources: dict[str, any_pb2.Any]) -> None:
        with self._lock:
            self.state[type_url] = (version, dict(resources))
            for stream in list(self.streams.values()):
                self._maybe_send(stream, type_url)

    # ------------------------------------------------------------ reading the record

    def of_type(self, type_url: str) -> list[discovery_pb2.DiscoveryRequest]:
        with self._lock:
            return [r for _, r in self.requests if r.type_url == type_url]

    def acks(self, type_url: str) -> list[discovery_pb2.DiscoveryRequest]:
        return [
            r for r in self.of_type(type_url) if r.response_nonce and not r.HasField("error_detail")
        ]

    def nacks(self, type_url: str) -> list[discovery_pb2.DiscoveryRequest]:
        return [r for r in self.of_type(type_url) if r.HasField("error_detail")]

    def connected(self) -> int:
        with self._lock:
            return len(self.streams)

    def sent_nonces(self) -> set[str]:
        return {str(n) for n in range(1, next(self._nonces))}

    # ------------------------------------------------------------ protocol

    def _serve(self, request_iterator, context):
        stream = _Stream(next(self._ids))
        with self._lock:
            self.streams[stream.id] = stream

        def read() -> None:
            try:
                for request in request_iterator:
                    self._on_request(stream, request)
            except Exception:  # noqa: BLE001 - the client went away
                pass
            stream.out.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            while True:
                item = stream.out.get()
                if item is None:
                    return
                yield item
        finally:
            with self._lock:
                self.streams.pop(stream.id, None)

    def _on_request(self, stream: _Stream, request) -> None:
        with self._lock:
            self.requests.append((stream.id, request))
            if request.node.id:
                stream.node_id = request.node.id
            t = request.type_url
            state = stream.types.get(t)
            if state is None:
                state = stream.types[t] = _TypeState(client_version=request.version_info)
            elif request.response_nonce and request.response_nonce != state.nonce:
                return
            names = list(request.resource_names)
            state.names = None if (not names and t in WILDCARD_TYPES) else frozenset(names)
            self._maybe_send(stream, t)

    def _maybe_send(self, stream: _Stream, type_url: str) -> None:
        state = stream.types.get(type_url)
        if state is None or type_url not in self.state:
            return
        version, resources = self.state[type_url]
        if state.responded:
            if state.sent_version == version and state.sent_names == state.names:
                return
        elif state.client_version == version:
            state.responded, state.sent_version, state.sent_names = True, version, state.names
            return
        if state.names is not None and not state.names:
            return
        if state.names is None:
            chosen = [resources[n] for n in sorted(resources)]
        else:
            chosen = [resources[n] for n in sorted(state.names) if n in resources]
        state.nonce = str(next(self._nonces))
        state.responded, state.sent_version, state.sent_names = True, version, state.names
        stream.out.put(
            discovery_pb2.DiscoveryResponse(
                version_info=version, resources=chosen, type_url=type_url, nonce=state.nonce
            )
        )


# ------------------------------------------------------------------ resources

ADS_SOURCE = config_source_pb2.ConfigSource(
    ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
)


def _socket(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


def eds_cluster(name: str) -> any_pb2.Any:
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(seconds=1),
    )
    cluster.eds_cluster_config.eds_config.CopyFrom(ADS_SOURCE)
    return pack(cluster)


def endpoints(cluster: str, port: int) -> any_pb2.Any:
    return pack(
        endpoint_pb2.ClusterLoadAssignment(
            cluster_name=cluster,
            endpoints=[
                ec.LocalityLbEndpoints(
                    lb_endpoints=[
                        ec.LbEndpoint(endpoint=ec.Endpoint(address=_socket("127.0.0.1", port)))
                    ]
                )
            ],
        )
    )


def routes(name: str, cluster: str, header: str = "") -> any_pb2.Any:
    """Every request to `cluster`; with `header`, responses carry x-route: <header>."""
    route = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=route_components_pb2.RouteAction(cluster=cluster),
    )
    if header:
        route.response_headers_to_add.append(
            base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="x-route", value=header))
        )
    return pack(
        route_pb2.RouteConfiguration(
            name=name,
            virtual_hosts=[
                route_components_pb2.VirtualHost(name="all", domains=["*"], routes=[route])
            ],
        )
    )


def http_listener(
    name: str, port: int, route_config: str, tls_secret: str = "", bogus_route: bool = False
) -> any_pb2.Any:
    """A loopback HTTP listener taking its routes over RDS; `tls_secret` terminates TLS
    with that SDS secret; `bogus_route` makes a config Envoy rejects (an unknown filter)."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=name.replace("/", "_"),
        rds=hcm_pb2.Rds(config_source=ADS_SOURCE, route_config_name=route_config),
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
            )
        ],
    )
    if bogus_route:
        bogus = any_pb2.Any(type_url="type.googleapis.com/meshplane.test.NoSuchFilter")
        manager.http_filters.insert(0, hcm_pb2.HttpFilter(name="bogus", typed_config=bogus))
    chain = listener_components_pb2.FilterChain(
        filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=pack(manager)
            )
        ]
    )
    if tls_secret:
        context = tls_pb2.DownstreamTlsContext(
            common_tls_context=tls_pb2.CommonTlsContext(
                tls_certificate_sds_secret_configs=[
                    secret_pb2.SdsSecretConfig(name=tls_secret, sds_config=ADS_SOURCE)
                ]
            )
        )
        chain.transport_socket.CopyFrom(
            base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))
        )
    return pack(
        listener_pb2.Listener(name=name, address=_socket("127.0.0.1", port), filter_chains=[chain])
    )


def simple_config(ads: FakeAds, version: str, listen_port: int, backend_port: int, **kw) -> None:
    """One listener → routes `r` → EDS cluster `c` → the backend, served in make-before-break
    order."""
    ads.set(CLUSTER, version, {"c": eds_cluster("c")})
    ads.set(ENDPOINT, version, {"c": endpoints("c", backend_port)})
    ads.set(LISTENER, version, {"in": http_listener("in", listen_port, "r", **kw)})
    ads.set(ROUTE, version, {"r": routes("r", "c", header=version)})


__all__ = ["SECRET", "FakeAds", "simple_config"]
