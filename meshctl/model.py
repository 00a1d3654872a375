"""The one internal model every parser produces and every writer reads.

A `Resource` holds an App Mesh spec exactly as the API takes it (camelCase, lists where the
API has lists), so parsers, the importer and the Terraform writer never disagree on shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class TranslateError(Exception):
    """A source cannot be brought over as written; the message names the file and resource."""


@dataclass(frozen=True)
class Kind:
    key: str  # App Mesh's camelCase name: describe response key, ARN path segment
    label: str  # for people: "virtual node"
    snake: str  # boto3 method suffix and Terraform type suffix: virtual_node
    cfn: str  # CloudFormation type suffix and Kubernetes kind: VirtualNode
    spec_shape: str
    name_param: str  # virtualNodeName
    parent: str | None = None  # "virtualRouter" for routes, "virtualGateway" for gateway routes
    order: int = 0

    @property
    def parent_param(self) -> str | None:
        return f"{self.parent}Name" if self.parent else None


MESH = Kind("mesh", "mesh", "mesh", "Mesh", "MeshSpec", "meshName", order=0)
VIRTUAL_NODE = Kind(
    "virtualNode", "virtual node", "virtual_node", "VirtualNode", "VirtualNodeSpec",
    "virtualNodeName", order=1,
)  # fmt: skip
VIRTUAL_ROUTER = Kind(
    "virtualRouter", "virtual router", "virtual_router", "VirtualRouter", "VirtualRouterSpec",
    "virtualRouterName", order=2,
)  # fmt: skip
ROUTE = Kind(
    "route", "route", "route", "Route", "RouteSpec", "routeName", parent="virtualRouter", order=3
)
VIRTUAL_SERVICE = Kind(
    "virtualService", "virtual service", "virtual_service", "VirtualService",
    "VirtualServiceSpec", "virtualServiceName", order=4,
)  # fmt: skip
VIRTUAL_GATEWAY = Kind(
    "virtualGateway", "virtual gateway", "virtual_gateway", "VirtualGateway",
    "VirtualGatewaySpec", "virtualGatewayName", order=5,
)  # fmt: skip
GATEWAY_ROUTE = Kind(
    "gatewayRoute", "gateway route", "gateway_route", "GatewayRoute", "GatewayRouteSpec",
    "gatewayRouteName", parent="virtualGateway", order=6,
)  # fmt: skip

# Dependency order: a route needs its router and target nodes, a service its provider,
# a gateway route its gateway and target service.
KINDS: tuple[Kind, ...] = (
    MESH,
    VIRTUAL_NODE,
    VIRTUAL_ROUTER,
    ROUTE,
    VIRTUAL_SERVICE,
    VIRTUAL_GATEWAY,
    GATEWAY_ROUTE,
)
BY_KEY = {k.key: k for k in KINDS}
BY_SNAKE = {k.snake: k for k in KINDS}
BY_CFN = {k.cfn: k for k in KINDS}


@dataclass
class Resource:
    kind: Kind
    mesh: str
    name: str
    spec: dict[str, Any]
    parent: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    origin: str = ""  # "main.tf: aws_appmesh_route.canary" — what errors point at

    @property
    def ident(self) -> tuple[str, str, str, str]:
        return (self.kind.key, self.mesh, self.parent or "", self.name)

    @property
    def label(self) -> str:
        path = "/".join(p for p in (self.mesh, self.parent, self.name) if p)
        if self.kind is MESH:
            path = self.name
        return f"{self.kind.label} {path}"

    def names(self) -> dict[str, str]:
        """The request parameters that identify this resource in App Mesh API calls."""
        if self.kind is MESH:
            return {"meshName": self.name}
        params = {"meshName": self.mesh, self.kind.name_param: self.name}
        if self.kind.parent_param:
            params[self.kind.parent_param] = self.parent or ""
        return params


def normalise_spec(kind: Kind, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as the API stores it, so a desired spec compares equal to a described one."""
    spec = dict(spec)
    if kind is MESH:
        spec.setdefault("egressFilter", {"type": "DROP_ALL"})
    return spec


def ordered(resources: list[Resource]) -> list[Resource]:
    """Dependency order, stable inside a kind; duplicate identities are refused."""
    seen: dict[tuple[str, str, str, str], Resource] = {}
    for resource in resources:
        earlier = seen.get(resource.ident)
        if earlier is not None:
            raise TranslateError(
                f"{resource.origin}: {resource.label} is also defined by {earlier.origin}; "
                "each resource may be defined once."
            )
        seen[resource.ident] = resource
    return sorted(resources, key=lambda r: r.kind.order)


def references(resource: Resource) -> list[tuple[str, Kind, str, str]]:
    """(field, kind, parent, name) of what must exist before this resource can be written."""
    refs: list[tuple[str, Kind, str, str]] = []
    if resource.kind is MESH:
        return refs
    refs.append(("meshName", MESH, "", resource.mesh))
    spec = resource.spec
    if resource.kind is ROUTE:
        refs.append(("virtualRouterName", VIRTUAL_ROUTER, "", resource.parent or ""))
        for route_type in ("httpRoute", "http2Route", "grpcRoute", "tcpRoute"):
            targets = ((spec.get(route_type) or {}).get("action") or {}).get("weightedTargets")
            for i, target in enumerate(targets or []):
                field = f"spec.{route_type}.action.weightedTargets[{i}].virtualNode"
                refs.append((field, VIRTUAL_NODE, "", target.get("virtualNode", "")))
    elif resource.kind is GATEWAY_ROUTE:
        refs.append(("virtualGatewayName", VIRTUAL_GATEWAY, "", resource.parent or ""))
        for route_type in ("httpRoute", "http2Route", "grpcRoute"):
            action = (spec.get(route_type) or {}).get("action") or {}
            service = (action.get("target") or {}).get("virtualService") or {}
            if "virtualServiceName" in service:
                field = f"spec.{route_type}.action.target.virtualService.virtualServiceName"
                refs.append((field, VIRTUAL_SERVICE, "", service["virtualServiceName"]))
    elif resource.kind is VIRTUAL_SERVICE:
        provider = spec.get("provider") or {}
        if "virtualNode" in provider:
            name = provider["virtualNode"].get("virtualNodeName", "")
            refs.append(("spec.provider.virtualNode.virtualNodeName", VIRTUAL_NODE, "", name))
        if "virtualRouter" in provider:
            name = provider["virtualRouter"].get("virtualRouterName", "")
            refs.append(("spec.provider.virtualRouter.virtualRouterName", VIRTUAL_ROUTER, "", name))
    return refs
