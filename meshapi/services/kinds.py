"""The seven App Mesh resource types, described once so services and views stay generic."""

from dataclasses import dataclass

from django.db import models

from meshapi import models as m


@dataclass(frozen=True)
class Kind:
    key: str  # wire name of the resource: "virtualNode"
    op: str  # operation suffix: "VirtualNode"
    model: type[models.Model]
    list_key: str  # "virtualNodes"
    quota: str
    parent: "Kind | None" = None
    parent_field: str = ""  # FK on the model pointing at the parent row

    @property
    def name_field(self) -> str:
        return f"{self.key}Name"

    @property
    def label(self) -> str:
        """Human name for messages: "virtual node"."""
        out = "".join(" " + c.lower() if c.isupper() else c for c in self.key)
        return out

    @property
    def plural_label(self) -> str:
        return "meshes" if self.key == "mesh" else self.label + "s"


MESH = Kind("mesh", "Mesh", m.Mesh, "meshes", "meshes")
VIRTUAL_NODE = Kind(
    "virtualNode", "VirtualNode", m.VirtualNode, "virtualNodes", "virtual_nodes_per_mesh"
)
VIRTUAL_SERVICE = Kind(
    "virtualService",
    "VirtualService",
    m.VirtualService,
    "virtualServices",
    "virtual_services_per_mesh",
)
VIRTUAL_ROUTER = Kind(
    "virtualRouter", "VirtualRouter", m.VirtualRouter, "virtualRouters", "virtual_routers_per_mesh"
)
ROUTE = Kind(
    "route",
    "Route",
    m.Route,
    "routes",
    "routes_per_virtual_router",
    parent=VIRTUAL_ROUTER,
    parent_field="virtual_router",
)
VIRTUAL_GATEWAY = Kind(
    "virtualGateway",
    "VirtualGateway",
    m.VirtualGateway,
    "virtualGateways",
    "virtual_gateways_per_mesh",
)
GATEWAY_ROUTE = Kind(
    "gatewayRoute",
    "GatewayRoute",
    m.GatewayRoute,
    "gatewayRoutes",
    "gateway_routes_per_virtual_gateway",
    parent=VIRTUAL_GATEWAY,
    parent_field="virtual_gateway",
)

KINDS: tuple[Kind, ...] = (
    MESH,
    VIRTUAL_NODE,
    VIRTUAL_SERVICE,
    VIRTUAL_ROUTER,
    ROUTE,
    VIRTUAL_GATEWAY,
    GATEWAY_ROUTE,
)
BY_OP = {k.op: k for k in KINDS}
BY_KEY = {k.key: k for k in KINDS}
