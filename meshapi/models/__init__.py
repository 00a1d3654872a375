from meshapi.models.endpoints import Endpoint
from meshapi.models.gateways import GatewayRoute, VirtualGateway
from meshapi.models.idempotency import IdempotencyRecord
from meshapi.models.instances import ProxyConnection, ProxyInstance
from meshapi.models.meshes import Mesh
from meshapi.models.nodes import VirtualNode, VirtualService
from meshapi.models.proxies import (
    CompileState,
    ConfigManifest,
    ConfigResource,
    ProxyConfig,
    ProxyKind,
    ProxyVersion,
)
from meshapi.models.routing import Route, VirtualRouter

__all__ = [
    "CompileState",
    "ConfigManifest",
    "ConfigResource",
    "Endpoint",
    "GatewayRoute",
    "IdempotencyRecord",
    "Mesh",
    "ProxyConfig",
    "ProxyConnection",
    "ProxyInstance",
    "ProxyKind",
    "ProxyVersion",
    "Route",
    "VirtualGateway",
    "VirtualNode",
    "VirtualRouter",
    "VirtualService",
]
