"""The compiler's output: an immutable set of xDS resources for one proxy.

Versions are content hashes: a resource's hash is the sha256 of its deterministic
serialization, a type's version hashes its (name, hash) pairs, and the snapshot's version
hashes all of them, so an unchanged input yields the same versions and pushes nothing.
Warnings and metadata ride along; warnings do not change the version.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import json_format

from workers.compiler import xds
from workers.compiler.context import ProxyRequest


class InconsistentSnapshot(ValueError):
    def __init__(self, node_id: str, problems: list[str]):
        super().__init__(f"{node_id}: " + "; ".join(problems))
        self.problems = problems


def resource_hash(message) -> str:
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()


def _digest(lines) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class Snapshot:
    """{type_url → {name → message}}. Never mutate the messages: they may be shared with
    other proxies' snapshots of the same mesh compile."""

    node_id: str
    proxy: ProxyRequest
    resources: Mapping[str, Mapping[str, object]]
    hashes: Mapping[str, Mapping[str, str]]
    version: str
    type_versions: Mapping[str, str]
    warnings: tuple[str, ...] = ()
    metadata: Mapping = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def build(cls, node_id, proxy, resources, warnings=(), metadata=None, hasher=resource_hash):
        frozen, hashes, versions = {}, {}, {}
        for type_url in xds.TYPE_ORDER:
            bucket = resources.get(type_url, {})
            names = sorted(bucket)
            frozen[type_url] = MappingProxyType({n: bucket[n] for n in names})
            hashes[type_url] = MappingProxyType({n: hasher(bucket[n]) for n in names})
            versions[type_url] = _digest(f"{n} {hashes[type_url][n]}" for n in names)
        version = _digest(f"{t} {versions[t]}" for t in xds.TYPE_ORDER)
        return cls(
            node_id=node_id,
            proxy=proxy,
            resources=MappingProxyType(frozen),
            hashes=MappingProxyType(hashes),
            version=version,
            type_versions=MappingProxyType(versions),
            warnings=tuple(sorted(set(warnings))),
            metadata=MappingProxyType(dict(metadata or {})),
        )

    def for_proxy(self, node_id: str, proxy: ProxyRequest) -> "Snapshot":
        """This configuration under another proxy's name: every other field is shared.
        What `dataclasses.replace` does, in a quarter of its time (a compile makes one per
        proxy of a shared shape: 1,000 clients of one backend)."""
        copy = object.__new__(Snapshot)
        fields = {**self.__dict__, "node_id": node_id, "proxy": proxy}
        object.__setattr__(copy, "__dict__", fields)
        return copy

    def of(self, type_url: str) -> Mapping[str, object]:
        return self.resources.get(type_url, MappingProxyType({}))

    # ------------------------------------------------------------ consistency

    def consistent(self) -> list[str]:
        """Problems that would make a proxy reject or stall on this snapshot: a listener's
        route configuration or cluster that is not here, a route's cluster that is not
        here, an EDS cluster without a ClusterLoadAssignment. Empty when consistent."""
        clusters = self.of(xds.CLUSTER)
        routes = self.of(xds.ROUTE)
        assignments = self.of(xds.ENDPOINT)
        problems = []

        def need_cluster(name: str, where: str) -> None:
            if name not in clusters:
                problems.append(f"{where} uses cluster '{name}', which is not in the snapshot")

        for lname, listener in self.of(xds.LISTENER).items():
            chains = list(listener.filter_chains)
            if listener.HasField("default_filter_chain"):
                chains.append(listener.default_filter_chain)
            anys = [f.typed_config for c in chains for f in c.filters]
            if listener.HasField("api_listener"):
                anys.append(listener.api_listener.api_listener)
            for packed in anys:
                where = f"listener {lname}"
                if packed.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                    hcm = hcm_pb2.HttpConnectionManager()
                    packed.Unpack(hcm)
                    if hcm.HasField("rds") and hcm.rds.route_config_name not in routes:
                        problems.append(
                            f"{where} uses route configuration '{hcm.rds.route_config_name}', "
                            "which is not in the snapshot"
                        )
                    if hcm.HasField("route_config"):
                        for cluster in _route_clusters(hcm.route_config):
                            need_cluster(cluster, where)
                elif packed.Is(tcp_proxy_pb2.TcpProxy.DESCRIPTOR):
                    proxy = tcp_proxy_pb2.TcpProxy()
                    packed.Unpack(proxy)
                    if proxy.cluster:
                        need_cluster(proxy.cluster, where)
                    for weighted in proxy.weighted_clusters.clusters:
                        need_cluster(weighted.name, where)
        for rname, config in routes.items():
            for cluster in _route_clusters(config):
                need_cluster(cluster, f"route configuration {rname}")
        for cname, cluster in clusters.items():
            if cluster.type == cluster_pb2.Cluster.EDS and cname not in assignments:
                problems.append(f"EDS cluster '{cname}' has no ClusterLoadAssignment")
        return sorted(set(problems))

    def check(self) -> "Snapshot":
        problems = self.consistent()
        if problems:
            raise InconsistentSnapshot(self.node_id, problems)
        return self

    # ------------------------------------------------------------ presentation

    def to_json(self) -> dict:
        """Envoy JSON per resource (proto field names), sorted, with versions and warnings."""
        out = {
            "node": self.node_id,
            "consumer": self.proxy.consumer,
            "interception": self.proxy.interception,
            "version": self.version,
            "warnings": list(self.warnings),
            "metadata": dict(self.metadata),
            "resources": {},
        }
        for type_url in xds.TYPE_ORDER:
            bucket = self.of(type_url)
            if bucket:
                out["resources"][type_url.rsplit(".", 1)[-1]] = {
                    name: json_format.MessageToDict(msg, preserving_proto_field_name=True)
                    for name, msg in bucket.items()
                }
        return out


def _route_clusters(config) -> list[str]:
    out = []
    for host in config.virtual_hosts:
        for route in host.routes:
            if route.HasField("route"):
                action = route.route
                if action.cluster:
                    out.append(action.cluster)
                out.extend(w.name for w in action.weighted_clusters.clusters)
    return out
