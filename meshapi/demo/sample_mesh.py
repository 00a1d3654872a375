"""The demo's sample mesh "shop", applied through boto3 like any App Mesh user would.

frontend → catalog.shop.local (router "catalog": 90 % catalog-v1, 10 % catalog-v2), and a
virtual gateway "shop-gateway" whose gateway route sends everything to frontend.shop.local.
Applying is idempotent: a missing resource is created, one whose spec differs is updated
back to this definition, an identical one is left alone.
"""

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

MESH = "shop"
ROUTER = "catalog"
ROUTE = "catalog-split"
GATEWAY = "shop-gateway"
GATEWAY_ROUTE = "to-frontend"
WEIGHTS = {"catalog-v1": 90, "catalog-v2": 10}


def _node(hostname: str, backends: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "listeners": [
            {
                "portMapping": {"port": 8080, "protocol": "http"},
                "healthCheck": {
                    "protocol": "http",
                    "path": "/healthz",
                    "port": 8080,
                    "healthyThreshold": 2,
                    "unhealthyThreshold": 3,
                    "intervalMillis": 5000,
                    "timeoutMillis": 2000,
                },
            }
        ],
        "serviceDiscovery": {"dns": {"hostname": hostname}},
    }
    if backends:
        spec["backends"] = [{"virtualService": {"virtualServiceName": name}} for name in backends]
    return spec


@dataclass(frozen=True)
class Resource:
    """One App Mesh resource: `kind` names the boto3 operations (create_<kind> …)."""

    kind: str
    names: dict[str, str]
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind.replace('_', ' ')} {'/'.join(self.names.values())}"


# In dependency order: what a resource refers to comes before it.
RESOURCES: list[Resource] = [
    Resource("mesh", {"meshName": MESH}, {"egressFilter": {"type": "DROP_ALL"}}),
    Resource(
        "virtual_node",
        {"meshName": MESH, "virtualNodeName": "catalog-v1"},
        _node("catalog-v1.shop.local", []),
    ),
    Resource(
        "virtual_node",
        {"meshName": MESH, "virtualNodeName": "catalog-v2"},
        _node("catalog-v2.shop.local", []),
    ),
    Resource(
        "virtual_node",
        {"meshName": MESH, "virtualNodeName": "frontend"},
        _node("frontend.shop.local", ["catalog.shop.local"]),
    ),
    Resource(
        "virtual_router",
        {"meshName": MESH, "virtualRouterName": ROUTER},
        {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
    ),
    Resource(
        "route",
        {"meshName": MESH, "virtualRouterName": ROUTER, "routeName": ROUTE},
        {
            "httpRoute": {
                "match": {"prefix": "/"},
                "action": {
                    "weightedTargets": [
                        {"virtualNode": node, "weight": weight, "port": 8080}
                        for node, weight in WEIGHTS.items()
                    ]
                },
                "retryPolicy": {
                    "maxRetries": 2,
                    "perRetryTimeout": {"unit": "ms", "value": 2000},
                    "httpRetryEvents": ["server-error", "gateway-error"],
                },
            }
        },
    ),
    Resource(
        "virtual_service",
        {"meshName": MESH, "virtualServiceName": "catalog.shop.local"},
        {"provider": {"virtualRouter": {"virtualRouterName": ROUTER}}},
    ),
    Resource(
        "virtual_service",
        {"meshName": MESH, "virtualServiceName": "frontend.shop.local"},
        {"provider": {"virtualNode": {"virtualNodeName": "frontend"}}},
    ),
    Resource(
        "virtual_gateway",
        {"meshName": MESH, "virtualGatewayName": GATEWAY},
        {"listeners": [{"portMapping": {"port": 8443, "protocol": "http"}}]},
    ),
    Resource(
        "gateway_route",
        {"meshName": MESH, "virtualGatewayName": GATEWAY, "gatewayRouteName": GATEWAY_ROUTE},
        {
            "httpRoute": {
                "match": {"prefix": "/"},
                "action": {
                    "target": {"virtualService": {"virtualServiceName": "frontend.shop.local"}}
                },
            }
        },
    ),
]


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged"
        )


def _describe(client: Any, resource: Resource) -> dict[str, Any] | None:
    try:
        return getattr(client, f"describe_{resource.kind}")(**resource.names)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NotFoundException":
            return None
        raise


def _key(kind: str) -> str:
    """describe_virtual_node → response["virtualNode"]."""
    head, *rest = kind.split("_")
    return head + "".join(part.title() for part in rest)


def apply(client: Any, resources: list[Resource] = RESOURCES) -> ApplyResult:
    """Create or update every resource through an App Mesh boto3 client."""
    result = ApplyResult()
    for resource in resources:
        current = _describe(client, resource)
        if current is None:
            getattr(client, f"create_{resource.kind}")(spec=resource.spec, **resource.names)
            result.created.append(resource.label)
        elif current[_key(resource.kind)]["spec"] != resource.spec:
            getattr(client, f"update_{resource.kind}")(spec=resource.spec, **resource.names)
            result.updated.append(resource.label)
        else:
            result.unchanged.append(resource.label)
    return result
