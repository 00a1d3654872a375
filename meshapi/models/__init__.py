from meshapi.models.gateways import GatewayRoute, VirtualGateway
from meshapi.models.idempotency import IdempotencyRecord
from meshapi.models.meshes import Mesh
from meshapi.models.nodes import VirtualNode, VirtualService
from meshapi.models.routing import Route, VirtualRouter

__all__ = [
    "GatewayRoute",
    "IdempotencyRecord",
    "Mesh",
    "Route",
    "VirtualGateway",
    "VirtualNode",
    "VirtualRouter",
    "VirtualService",
]
