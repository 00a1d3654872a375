"""Realistic App Mesh specs for the benchmark's mesh (pure data, no Django)."""

from typing import Any

MESH = "bench"
SMALL_MESH = "bench-small"
ROUTER = "web-router"
ROUTE = "web-route"
PORT = 8080


def node_name(i: int) -> str:
    return f"svc-{i:03d}"


def node_spec(i: int, n: int, mesh: str) -> dict[str, Any]:
    """A node as teams wrote them for App Mesh: HTTP listener with health check, timeouts,
    outlier detection and a connection pool, DNS discovery, three backends, TLS defaults."""
    backends = [node_name((i + k) % n) for k in (1, 2, 3)]
    return {
        "listeners": [
            {
                "portMapping": {"port": PORT, "protocol": "http"},
                "healthCheck": {
                    "protocol": "http",
                    "path": "/healthz",
                    "healthyThreshold": 2,
                    "unhealthyThreshold": 3,
                    "timeoutMillis": 2000,
                    "intervalMillis": 5000,
                },
                "timeout": {
                    "http": {
                        "perRequest": {"unit": "s", "value": 15},
                        "idle": {"unit": "s", "value": 300},
                    }
                },
                "outlierDetection": {
                    "maxServerErrors": 5,
                    "interval": {"unit": "s", "value": 10},
                    "baseEjectionDuration": {"unit": "s", "value": 30},
                    "maxEjectionPercent": 50,
                },
                "connectionPool": {"http": {"maxConnections": 1024, "maxPendingRequests": 256}},
            }
        ],
        "serviceDiscovery": {
            "dns": {
                "hostname": f"{node_name(i)}.{mesh}.svc.cluster.local",
                "responseType": "LOADBALANCER",
            }
        },
        "backends": [
            {"virtualService": {"virtualServiceName": f"{b}.{mesh}.local"}} for b in backends
        ],
        "backendDefaults": {
            "clientPolicy": {
                "tls": {
                    "enforce": True,
                    "ports": [PORT],
                    "validation": {"trust": {"file": {"certificateChain": "/etc/mesh/ca.pem"}}},
                }
            }
        },
        "logging": {"accessLog": {"file": {"path": "/dev/stdout"}}},
    }


def router_spec() -> dict[str, Any]:
    return {"listeners": [{"portMapping": {"port": PORT, "protocol": "http"}}]}


def route_spec(canary_weight: int) -> dict[str, Any]:
    """A canary split between two nodes; the weight is what successive updates change."""
    return {
        "priority": 10,
        "httpRoute": {
            "match": {"prefix": "/"},
            "action": {
                "weightedTargets": [
                    {"virtualNode": node_name(0), "weight": 100 - canary_weight},
                    {"virtualNode": node_name(1), "weight": canary_weight},
                ]
            },
            "retryPolicy": {
                "maxRetries": 2,
                "perRetryTimeout": {"unit": "ms", "value": 2000},
                "httpRetryEvents": ["server-error", "gateway-error"],
                "tcpRetryEvents": ["connection-error"],
            },
            "timeout": {"perRequest": {"unit": "s", "value": 15}},
        },
    }
