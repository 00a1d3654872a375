"""The mesh every fixture under fixtures/ describes, as the App Mesh API holds it.

`shop`: a gateway in front of `frontend`, which calls `catalog.shop.local`; a router splits
catalog traffic 90/10 between catalog-v1 and catalog-v2 (a canary), with `x-canary: true`
sending everything to v2; listeners with TLS, health checks, outlier detection; retries.
The Kubernetes fixture names nodes, routers and gateways `<name>_<namespace>` as the
controller did, so specs take a `names` map.
"""

from typing import Any

SAME = {
    "frontend": "frontend",
    "catalog-v1": "catalog-v1",
    "catalog-v2": "catalog-v2",
    "catalog": "catalog",
    "shop-gateway": "shop-gateway",
    "to-frontend": "to-frontend",
}
KUBERNETES = {
    "frontend": "frontend_shop",
    "catalog-v1": "catalog-v1_shop",
    "catalog-v2": "catalog-v2_shop",
    "catalog": "catalog_shop",
    "shop-gateway": "shop-gateway_shop",
    "to-frontend": "to-frontend_shop",
}


def _health(path: str) -> dict[str, Any]:
    return {
        "healthyThreshold": 2,
        "intervalMillis": 5000,
        "path": path,
        "port": 8080,
        "protocol": "http",
        "timeoutMillis": 2000,
        "unhealthyThreshold": 3,
    }


def _catalog_node(version: str, discovery: dict[str, Any]) -> dict[str, Any]:
    return {
        "listeners": [
            {
                "portMapping": {"port": 8080, "protocol": "http"},
                "tls": {
                    "mode": "STRICT",
                    "certificate": {
                        "file": {
                            "certificateChain": f"/certs/catalog-{version}/chain.pem",
                            "privateKey": f"/certs/catalog-{version}/key.pem",
                        }
                    },
                },
                "healthCheck": _health("/healthz"),
                "outlierDetection": {
                    "baseEjectionDuration": {"unit": "s", "value": 30},
                    "interval": {"unit": "s", "value": 10},
                    "maxEjectionPercent": 50,
                    "maxServerErrors": 5,
                },
                "timeout": {"http": {"perRequest": {"unit": "ms", "value": 15000}}},
            }
        ],
        "serviceDiscovery": discovery,
    }


def specs(names: dict[str, str] = SAME) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(kind, parent, name) -> spec for every resource of mesh `shop`."""
    n = names
    retry = {
        "httpRetryEvents": ["server-error", "gateway-error"],
        "maxRetries": 3,
        "perRetryTimeout": {"unit": "s", "value": 2},
        "tcpRetryEvents": ["connection-error"],
    }
    return {
        ("mesh", "", "shop"): {"egressFilter": {"type": "ALLOW_ALL"}},
        ("virtualNode", "", n["frontend"]): {
            "listeners": [
                {
                    "portMapping": {"port": 8080, "protocol": "http"},
                    "healthCheck": _health("/ping"),
                }
            ],
            "backends": [
                {
                    "virtualService": {
                        "virtualServiceName": "catalog.shop.local",
                        "clientPolicy": {
                            "tls": {
                                "enforce": True,
                                "validation": {
                                    "trust": {"file": {"certificateChain": "/certs/ca.pem"}},
                                    "subjectAlternativeNames": {
                                        "match": {"exact": ["catalog.shop.local"]}
                                    },
                                },
                            }
                        },
                    }
                }
            ],
            "serviceDiscovery": {"dns": {"hostname": "frontend.shop.local"}},
            "logging": {"accessLog": {"file": {"path": "/dev/stdout"}}},
        },
        ("virtualNode", "", n["catalog-v1"]): _catalog_node(
            "v1", {"dns": {"hostname": "catalog-v1.shop.local"}}
        ),
        ("virtualNode", "", n["catalog-v2"]): _catalog_node(
            "v2",
            {
                "awsCloudMap": {
                    "namespaceName": "shop.local",
                    "serviceName": "catalog",
                    "attributes": [{"key": "version", "value": "v2"}],
                }
            },
        ),
        ("virtualRouter", "", n["catalog"]): {
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]
        },
        ("route", n["catalog"], "catalog-split"): {
            "priority": 10,
            "httpRoute": {
                "match": {"prefix": "/"},
                "action": {
                    "weightedTargets": [
                        {"virtualNode": n["catalog-v1"], "weight": 90},
                        {"virtualNode": n["catalog-v2"], "weight": 10},
                    ]
                },
                "retryPolicy": retry,
                "timeout": {"perRequest": {"unit": "s", "value": 15}},
            },
        },
        ("route", n["catalog"], "catalog-canary"): {
            "priority": 1,
            "httpRoute": {
                "match": {
                    "prefix": "/",
                    "headers": [{"name": "x-canary", "match": {"exact": "true"}}],
                },
                "action": {"weightedTargets": [{"virtualNode": n["catalog-v2"], "weight": 100}]},
            },
        },
        ("virtualService", "", "catalog.shop.local"): {
            "provider": {"virtualRouter": {"virtualRouterName": n["catalog"]}}
        },
        ("virtualService", "", "frontend.shop.local"): {
            "provider": {"virtualNode": {"virtualNodeName": n["frontend"]}}
        },
        ("virtualGateway", "", n["shop-gateway"]): {
            "listeners": [
                {
                    "portMapping": {"port": 8088, "protocol": "http"},
                    "healthCheck": {
                        "healthyThreshold": 2,
                        "intervalMillis": 10000,
                        "path": "/gw-health",
                        "port": 8088,
                        "protocol": "http",
                        "timeoutMillis": 2000,
                        "unhealthyThreshold": 2,
                    },
                }
            ],
            "logging": {"accessLog": {"file": {"path": "/dev/stdout"}}},
        },
        ("gatewayRoute", n["shop-gateway"], n["to-frontend"]): {
            "httpRoute": {
                "match": {"prefix": "/"},
                "action": {
                    "target": {"virtualService": {"virtualServiceName": "frontend.shop.local"}}
                },
            }
        },
    }


def read_mesh(client: Any, mesh: str = "shop") -> dict[tuple[str, str, str], dict[str, Any]]:
    """Everything a boto3 client sees in a mesh, keyed like specs()."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    out[("mesh", "", mesh)] = client.describe_mesh(meshName=mesh)["mesh"]["spec"]
    for item in client.list_virtual_nodes(meshName=mesh)["virtualNodes"]:
        name = item["virtualNodeName"]
        got = client.describe_virtual_node(meshName=mesh, virtualNodeName=name)
        out[("virtualNode", "", name)] = got["virtualNode"]["spec"]
    for item in client.list_virtual_routers(meshName=mesh)["virtualRouters"]:
        router = item["virtualRouterName"]
        got = client.describe_virtual_router(meshName=mesh, virtualRouterName=router)
        out[("virtualRouter", "", router)] = got["virtualRouter"]["spec"]
        for route in client.list_routes(meshName=mesh, virtualRouterName=router)["routes"]:
            got = client.describe_route(
                meshName=mesh, virtualRouterName=router, routeName=route["routeName"]
            )
            out[("route", router, route["routeName"])] = got["route"]["spec"]
    for item in client.list_virtual_services(meshName=mesh)["virtualServices"]:
        name = item["virtualServiceName"]
        got = client.describe_virtual_service(meshName=mesh, virtualServiceName=name)
        out[("virtualService", "", name)] = got["virtualService"]["spec"]
    for item in client.list_virtual_gateways(meshName=mesh)["virtualGateways"]:
        gateway = item["virtualGatewayName"]
        got = client.describe_virtual_gateway(meshName=mesh, virtualGatewayName=gateway)
        out[("virtualGateway", "", gateway)] = got["virtualGateway"]["spec"]
        listed = client.list_gateway_routes(meshName=mesh, virtualGatewayName=gateway)
        for route in listed["gatewayRoutes"]:
            name = route["gatewayRouteName"]
            got = client.describe_gateway_route(
                meshName=mesh, virtualGatewayName=gateway, gatewayRouteName=name
            )
            out[("gatewayRoute", gateway, name)] = got["gatewayRoute"]["spec"]
    return out
