"""The compiler's inputs: one mesh as frozen data, and the proxy asking for config.

`MeshContext.from_specs` takes plain dicts (name → spec, exactly as the API stored them),
so the loader only has to pass rows' specs; nothing here knows about the ORM.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.compiler.frozen import EMPTY, FrozenDict, freeze

NODE = "virtualNode"
GATEWAY = "virtualGateway"
CONSUMERS = ("envoy", "grpc")
INTERCEPTIONS = ("redirect", "explicit")
HEALTH = ("HEALTHY", "UNHEALTHY", "DRAINING", "UNKNOWN")
# The mesh's automatic mTLS policy (native API; App Mesh never had one).
MTLS_MODES = ("DISABLED", "PERMISSIVE", "STRICT")

# App Mesh's Envoy ports under iptables redirection; admin (9901) lives in the bootstrap.
REDIRECT_INGRESS_PORT = 15000
REDIRECT_EGRESS_PORT = 15001
ADMIN_PORT = 9901


@dataclass(frozen=True, order=True)
class Endpoint:
    """One address serving a virtual node's listener port."""

    address: str
    port: int
    source: str = "registered"  # registered | static | cloudmap | ecs | ec2
    health: str = "HEALTHY"  # HEALTHY | UNHEALTHY | DRAINING | UNKNOWN

    def __post_init__(self):
        if self.health not in HEALTH:
            raise ValueError(f"endpoint health must be one of {', '.join(HEALTH)}")


@dataclass(frozen=True)
class Router:
    spec: FrozenDict
    routes: FrozenDict  # route name → RouteSpec


@dataclass(frozen=True)
class Gateway:
    spec: FrozenDict
    routes: FrozenDict  # gateway route name → GatewayRouteSpec


@dataclass(frozen=True)
class MeshContext:
    mesh_name: str
    mesh: FrozenDict = EMPTY
    virtual_nodes: FrozenDict = EMPTY  # name → VirtualNodeSpec
    virtual_services: FrozenDict = EMPTY  # name → VirtualServiceSpec
    virtual_routers: FrozenDict = EMPTY  # name → Router
    virtual_gateways: FrozenDict = EMPTY  # name → Gateway
    endpoints: FrozenDict = EMPTY  # (node, port) → tuple[Endpoint, ...] sorted
    trust_bundle: str = ""  # the mesh CA bundle (PEM), served as an SDS validation secret
    mtls_mode: str = "DISABLED"  # automatic mTLS + authorization: DISABLED | PERMISSIVE | STRICT
    trust_domain: str = ""  # SPIFFE trust domain of the mesh's tenant (needed with mTLS on)
    _memo: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def from_specs(
        cls,
        mesh_name: str,
        mesh_spec: Mapping | None = None,
        *,
        virtual_nodes: Mapping[str, Mapping] | None = None,
        virtual_services: Mapping[str, Mapping] | None = None,
        virtual_routers: Mapping[str, Mapping] | None = None,
        routes: Mapping[str, Mapping[str, Mapping]] | None = None,
        virtual_gateways: Mapping[str, Mapping] | None = None,
        gateway_routes: Mapping[str, Mapping[str, Mapping]] | None = None,
        endpoints: Mapping[tuple[str, int], Iterable[Endpoint | Mapping[str, Any]]] | None = None,
        trust_bundle: str = "",
        mtls_mode: str = "DISABLED",
        trust_domain: str = "",
    ) -> "MeshContext":
        """Build a context from plain specs. `routes` and `gateway_routes` are keyed by their
        parent's name; routes whose parent is missing are dropped (the API forbids them)."""
        routes = routes or {}
        gateway_routes = gateway_routes or {}
        eps: dict[tuple[str, int], tuple[Endpoint, ...]] = {}
        for (node, port), items in (endpoints or {}).items():
            parsed = [e if isinstance(e, Endpoint) else Endpoint(**e) for e in items]
            eps[(node, int(port))] = tuple(sorted(set(parsed)))
        return cls(
            mesh_name=mesh_name,
            mesh=freeze(mesh_spec or {}),
            virtual_nodes=freeze(virtual_nodes or {}),
            virtual_services=freeze(virtual_services or {}),
            virtual_routers=FrozenDict(
                {
                    name: Router(freeze(spec), freeze(routes.get(name, {})))
                    for name, spec in (virtual_routers or {}).items()
                }
            ),
            virtual_gateways=FrozenDict(
                {
                    name: Gateway(freeze(spec), freeze(gateway_routes.get(name, {})))
                    for name, spec in (virtual_gateways or {}).items()
                }
            ),
            endpoints=FrozenDict(eps),
            trust_bundle=trust_bundle,
            mtls_mode=mtls_mode,
            trust_domain=trust_domain,
        )

    def __post_init__(self):
        if self.mtls_mode not in MTLS_MODES:
            raise ValueError(f"mtls_mode must be one of {', '.join(MTLS_MODES)}")
        if self.mtls_mode != "DISABLED" and not self.trust_domain:
            raise ValueError("trust_domain is required when mtls_mode is not DISABLED")

    @property
    def mtls(self) -> bool:
        """Automatic mTLS (and with it authorization by SPIFFE id) is on."""
        return self.mtls_mode != "DISABLED"

    def spiffe_id(self, kind: str, name: str) -> str:
        """The SPIFFE id the mesh CA issues to a virtual node's or gateway's proxy."""
        return f"spiffe://{self.trust_domain}/mesh/{self.mesh_name}/{kind}/{name}"

    def endpoints_of(self, node: str, port: int) -> tuple[Endpoint, ...]:
        return self.endpoints.get((node, port), ())


@dataclass(frozen=True)
class ProxyRequest:
    """Who asks: a virtual node's or gateway's proxy, what it consumes, how traffic reaches it.

    `interception` applies to virtual nodes: `redirect` is App Mesh's iptables model
    (ingress 15000, egress 15001, `portMapping.port` is the app's port); `explicit` needs no
    root: ingress listeners start at `ingress_port` (one per listener, in port order) and
    forward to the app (`app_port` replaces the port of a node's only listener), and each
    backend gets a loopback egress listener from `egress_port` up (see snapshot metadata).
    A gateway's proxy listens on its listeners' ports directly, whatever the mode.
    """

    kind: str
    name: str
    consumer: str = "envoy"
    interception: str = "redirect"
    app_port: int | None = None
    ingress_port: int = REDIRECT_INGRESS_PORT
    egress_port: int = REDIRECT_EGRESS_PORT

    def __post_init__(self):
        if self.kind not in (NODE, GATEWAY):
            raise ValueError(f"kind must be '{NODE}' or '{GATEWAY}', not {self.kind!r}")
        if self.consumer not in CONSUMERS:
            raise ValueError(f"consumer must be one of {', '.join(CONSUMERS)}")
        if self.interception not in INTERCEPTIONS:
            raise ValueError(f"interception must be one of {', '.join(INTERCEPTIONS)}")
        if self.kind == GATEWAY and self.consumer != "envoy":
            raise ValueError("a virtual gateway's proxy is always Envoy (consumer 'envoy')")

    def node_id(self, mesh_name: str) -> str:
        return f"mesh/{mesh_name}/{self.kind}/{self.name}"
