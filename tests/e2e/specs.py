"""Realistic App Mesh specs, shaped like what App Mesh users wrote, shared by the e2e suites.

Each function returns a fresh dict, so a test may change its copy freely.
"""

ACCOUNT = "111111111111"
REGION = "us-east-1"


def arn(*path: str) -> str:
    """arn:aws:appmesh:us-east-1:111111111111:mesh/<m>/…, alice's account."""
    return f"arn:aws:appmesh:{REGION}:{ACCOUNT}:" + "/".join(path)


def seconds(n: int) -> dict:
    return {"unit": "s", "value": n}


def millis(n: int) -> dict:
    return {"unit": "ms", "value": n}


def mesh_spec() -> dict:
    return {
        "egressFilter": {"type": "ALLOW_ALL"},
        "serviceDiscovery": {"ipPreference": "IPv4_PREFERRED"},
    }


def _san(*names: str) -> dict:
    return {"match": {"exact": list(names)}}


def _health(protocol: str, port: int, path: str | None = None) -> dict:
    check = {
        "healthyThreshold": 2,
        "intervalMillis": 5000,
        "port": port,
        "protocol": protocol,
        "timeoutMillis": 2000,
        "unhealthyThreshold": 3,
    }
    if path is not None:
        check["path"] = path
    return check


def _outliers() -> dict:
    return {
        "baseEjectionDuration": seconds(30),
        "interval": seconds(10),
        "maxEjectionPercent": 50,
        "maxServerErrors": 5,
    }


def http_listener() -> dict:
    """HTTP listener: STRICT TLS from files, client certificates validated by SAN."""
    return {
        "portMapping": {"port": 8080, "protocol": "http"},
        "tls": {
            "mode": "STRICT",
            "certificate": {
                "file": {
                    "certificateChain": "/certs/orders/chain.pem",
                    "privateKey": "/certs/orders/key.pem",
                }
            },
            "validation": {
                "trust": {"file": {"certificateChain": "/certs/ca/chain.pem"}},
                "subjectAlternativeNames": _san("frontend.shop.local", "gateway.shop.local"),
            },
        },
        "healthCheck": _health("http", 8080, "/healthz"),
        "timeout": {"http": {"idle": seconds(300), "perRequest": millis(15000)}},
        "outlierDetection": _outliers(),
        "connectionPool": {"http": {"maxConnections": 512, "maxPendingRequests": 1024}},
    }


def http2_listener() -> dict:
    """HTTP/2 listener: PERMISSIVE TLS from SDS, validated against an SDS trust bundle."""
    return {
        "portMapping": {"port": 8443, "protocol": "http2"},
        "tls": {
            "mode": "PERMISSIVE",
            "certificate": {"sds": {"secretName": "spiffe://acme.example/ns/shop/orders"}},
            "validation": {
                "trust": {"sds": {"secretName": "spiffe://acme.example/bundle"}},
                "subjectAlternativeNames": _san("spiffe://acme.example/ns/shop/frontend"),
            },
        },
        "healthCheck": _health("http2", 8443, "/ready"),
        "timeout": {"http2": {"idle": seconds(60), "perRequest": seconds(5)}},
        "outlierDetection": _outliers(),
        "connectionPool": {"http2": {"maxRequests": 2048}},
    }


def grpc_listener() -> dict:
    return {
        "portMapping": {"port": 9090, "protocol": "grpc"},
        "tls": {
            "mode": "STRICT",
            "certificate": {"sds": {"secretName": "orders-grpc"}},
        },
        "healthCheck": _health("grpc", 9090),
        "timeout": {"grpc": {"idle": seconds(120), "perRequest": millis(2500)}},
        "outlierDetection": _outliers(),
        "connectionPool": {"grpc": {"maxRequests": 1000}},
    }


def tcp_listener() -> dict:
    return {
        "portMapping": {"port": 5432, "protocol": "tcp"},
        "healthCheck": _health("tcp", 5432),
        "timeout": {"tcp": {"idle": seconds(3600)}},
        "connectionPool": {"tcp": {"maxConnections": 100}},
    }


def _client_policy_file() -> dict:
    return {
        "tls": {
            "enforce": True,
            "ports": [8080, 8443],
            "certificate": {
                "file": {
                    "certificateChain": "/certs/orders/client-chain.pem",
                    "privateKey": "/certs/orders/client-key.pem",
                }
            },
            "validation": {
                "trust": {"file": {"certificateChain": "/certs/ca/chain.pem"}},
                "subjectAlternativeNames": _san("payments.shop.local"),
            },
        }
    }


def _client_policy_sds() -> dict:
    return {
        "tls": {
            "enforce": False,
            "certificate": {"sds": {"secretName": "orders-client"}},
            "validation": {"trust": {"sds": {"secretName": "acme-bundle"}}},
        }
    }


def node_spec_dns() -> dict:
    """Four listeners (http, http2, grpc, tcp), DNS discovery, backends with client TLS."""
    return {
        "listeners": [http_listener(), http2_listener(), grpc_listener(), tcp_listener()],
        "serviceDiscovery": {
            "dns": {
                "hostname": "orders.shop.svc.cluster.local",
                "responseType": "ENDPOINTS",
                "ipPreference": "IPv4_ONLY",
            }
        },
        "backendDefaults": {
            "clientPolicy": {
                "tls": {
                    "enforce": True,
                    "validation": {
                        "trust": {
                            "acm": {
                                "certificateAuthorityArns": [
                                    "arn:aws:acm-pca:us-east-1:111111111111:"
                                    "certificate-authority/0b4fbeb3-53b2-4d6b-a3b9-2d9f5e2d1c9a"
                                ]
                            }
                        }
                    },
                }
            }
        },
        "backends": [
            {
                "virtualService": {
                    "virtualServiceName": "payments.shop.local",
                    "clientPolicy": _client_policy_file(),
                }
            },
            {
                "virtualService": {
                    "virtualServiceName": "inventory.shop.local",
                    "clientPolicy": _client_policy_sds(),
                }
            },
            {"virtualService": {"virtualServiceName": "ledger.shop.local"}},
        ],
        "logging": {
            "accessLog": {
                "file": {
                    "path": "/dev/stdout",
                    "format": {
                        "json": [
                            {"key": "start", "value": "%START_TIME%"},
                            {"key": "status", "value": "%RESPONSE_CODE%"},
                            {"key": "upstream", "value": "%UPSTREAM_HOST%"},
                        ]
                    },
                }
            }
        },
    }


def node_spec_cloud_map() -> dict:
    """One gRPC listener, Cloud Map discovery with attributes, text access log."""
    return {
        "listeners": [grpc_listener()],
        "serviceDiscovery": {
            "awsCloudMap": {
                "namespaceName": "shop.local",
                "serviceName": "orders",
                "attributes": [
                    {"key": "stack", "value": "blue"},
                    {"key": "ECS_TASK_DEFINITION_FAMILY", "value": "orders-v2"},
                ],
                "ipPreference": "IPv6_PREFERRED",
            }
        },
        "backends": [{"virtualService": {"virtualServiceName": "payments.shop.local"}}],
        "logging": {
            "accessLog": {
                "file": {
                    "path": "/var/log/envoy/access.log",
                    "format": {"text": "[%START_TIME%] %REQ(:METHOD)% %RESPONSE_CODE%\n"},
                }
            }
        },
    }


def node_spec_minimal(port: int = 8080, hostname: str = "orders.shop.local") -> dict:
    return {
        "listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": hostname}},
    }


def router_spec() -> dict:
    return {
        "listeners": [
            {"portMapping": {"port": 8080, "protocol": "http"}},
            {"portMapping": {"port": 8443, "protocol": "http2"}},
            {"portMapping": {"port": 9090, "protocol": "grpc"}},
            {"portMapping": {"port": 5432, "protocol": "tcp"}},
        ]
    }


def _targets(*pairs: tuple[str, int], port: int | None = None) -> dict:
    targets = []
    for node, weight in pairs:
        target = {"virtualNode": node, "weight": weight}
        if port is not None:
            target["port"] = port
        targets.append(target)
    return {"weightedTargets": targets}


def http_route_headers(blue: str = "orders-blue", green: str = "orders-green") -> dict:
    """HTTP route on a prefix: method, scheme, port, every header match, query parameters."""
    return {
        "priority": 10,
        "httpRoute": {
            "match": {
                "prefix": "/orders",
                "method": "POST",
                "scheme": "https",
                "port": 8080,
                "headers": [
                    {"name": "x-tenant", "match": {"exact": "acme"}},
                    {"name": "x-canary", "invert": True, "match": {"prefix": "off"}},
                    {"name": "user-agent", "match": {"suffix": "Mobile"}},
                    {"name": "x-request-id", "match": {"regex": "^[0-9a-f-]{36}$"}},
                    {"name": "x-api-version", "match": {"range": {"start": 2, "end": 5}}},
                    {"name": "x-debug", "invert": True},
                ],
                "queryParameters": [
                    {"name": "region", "match": {"exact": "eu"}},
                    {"name": "preview"},
                ],
            },
            "action": _targets((blue, 90), (green, 10), port=8080),
            "retryPolicy": {
                "maxRetries": 3,
                "perRetryTimeout": millis(500),
                "httpRetryEvents": ["server-error", "gateway-error"],
                "tcpRetryEvents": ["connection-error"],
            },
            "timeout": {"idle": seconds(60), "perRequest": seconds(15)},
        },
    }


def http_route_path_exact(node: str = "orders-blue") -> dict:
    return {
        "priority": 0,
        "httpRoute": {
            "match": {"path": {"exact": "/orders/health"}, "method": "GET"},
            "action": _targets((node, 100)),
        },
    }


def http2_route_path_regex(blue: str = "orders-blue", green: str = "orders-green") -> dict:
    return {
        "priority": 1000,
        "http2Route": {
            "match": {"path": {"regex": "/orders/[0-9]+/items"}, "scheme": "http"},
            "action": _targets((blue, 50), (green, 50), port=8443),
            "retryPolicy": {
                "maxRetries": 0,
                "perRetryTimeout": seconds(1),
                "httpRetryEvents": ["stream-error"],
            },
            "timeout": {"perRequest": millis(750)},
        },
    }


def grpc_route(blue: str = "orders-blue", green: str = "orders-green") -> dict:
    return {
        "priority": 5,
        "grpcRoute": {
            "match": {
                "serviceName": "shop.orders.v1.OrderService",
                "methodName": "PlaceOrder",
                "port": 9090,
                "metadata": [
                    {"name": "x-tenant", "match": {"exact": "acme"}},
                    {"name": "x-region", "match": {"prefix": "eu-"}},
                    {"name": "x-client", "match": {"suffix": "-ios"}},
                    {"name": "x-trace", "match": {"regex": "^[0-9a-f]{32}$"}},
                    {
                        "name": "x-build",
                        "invert": True,
                        "match": {"range": {"start": 0, "end": 100}},
                    },
                    {"name": "x-shadow", "invert": True},
                ],
            },
            "action": _targets((blue, 80), (green, 20), port=9090),
            "retryPolicy": {
                "maxRetries": 2,
                "perRetryTimeout": millis(250),
                "grpcRetryEvents": ["unavailable", "deadline-exceeded", "resource-exhausted"],
                "httpRetryEvents": ["gateway-error"],
                "tcpRetryEvents": ["connection-error"],
            },
            "timeout": {"idle": seconds(30), "perRequest": seconds(2)},
        },
    }


def tcp_route(node: str = "orders-blue") -> dict:
    return {
        "tcpRoute": {
            "match": {"port": 5432},
            "action": _targets((node, 100), port=5432),
            "timeout": {"idle": seconds(600)},
        },
    }


def gateway_spec() -> dict:
    return {
        "listeners": [
            {
                "portMapping": {"port": 443, "protocol": "http"},
                "tls": {
                    "mode": "STRICT",
                    "certificate": {
                        "file": {
                            "certificateChain": "/certs/edge/chain.pem",
                            "privateKey": "/certs/edge/key.pem",
                        }
                    },
                    "validation": {
                        "trust": {"file": {"certificateChain": "/certs/partners/ca.pem"}},
                        "subjectAlternativeNames": _san("partner.example.com"),
                    },
                },
                "healthCheck": _health("http", 443, "/ping"),
                "connectionPool": {"http": {"maxConnections": 2048, "maxPendingRequests": 4096}},
            },
            {
                "portMapping": {"port": 8443, "protocol": "http2"},
                "tls": {"mode": "PERMISSIVE", "certificate": {"sds": {"secretName": "edge-h2"}}},
                "connectionPool": {"http2": {"maxRequests": 4096}},
            },
            {
                "portMapping": {"port": 9443, "protocol": "grpc"},
                "healthCheck": _health("grpc", 9443),
                "connectionPool": {"grpc": {"maxRequests": 512}},
            },
        ],
        "backendDefaults": {
            "clientPolicy": {
                "tls": {
                    "enforce": True,
                    "ports": [8080],
                    "certificate": {"sds": {"secretName": "edge-client"}},
                    "validation": {
                        "trust": {"sds": {"secretName": "acme-bundle"}},
                        "subjectAlternativeNames": _san("orders.shop.local"),
                    },
                }
            }
        },
        "logging": {
            "accessLog": {
                "file": {
                    "path": "/dev/stdout",
                    "format": {"json": [{"key": "path", "value": "%REQ(:PATH)%"}]},
                }
            }
        },
    }


def gateway_route_http(service: str = "orders.shop.local") -> dict:
    """Hostname exact match, headers, query, method; rewrites hostname and prefix."""
    return {
        "priority": 20,
        "httpRoute": {
            "match": {
                "prefix": "/api/orders/",
                "hostname": {"exact": "shop.example.com"},
                "method": "GET",
                "port": 443,
                "headers": [{"name": "x-tenant", "match": {"exact": "acme"}}],
                "queryParameters": [{"name": "v", "match": {"exact": "2"}}],
            },
            "action": {
                "target": {"virtualService": {"virtualServiceName": service}, "port": 8080},
                "rewrite": {
                    "hostname": {"defaultTargetHostname": "ENABLED"},
                    "prefix": {"value": "/orders/"},
                },
            },
        },
    }


def gateway_route_http2_path(service: str = "orders.shop.local") -> dict:
    return {
        "http2Route": {
            "match": {
                "path": {"exact": "/legacy/checkout"},
                "hostname": {"suffix": ".shop.example.com"},
            },
            "action": {
                "target": {"virtualService": {"virtualServiceName": service}},
                "rewrite": {
                    "hostname": {"defaultTargetHostname": "DISABLED"},
                    "path": {"exact": "/checkout"},
                },
            },
        },
    }


def gateway_route_http_default_prefix(service: str = "orders.shop.local") -> dict:
    return {
        "httpRoute": {
            "match": {"prefix": "/shop/"},
            "action": {
                "target": {"virtualService": {"virtualServiceName": service}},
                "rewrite": {"prefix": {"defaultPrefix": "DISABLED"}},
            },
        },
    }


def gateway_route_grpc(service: str = "orders.shop.local") -> dict:
    return {
        "priority": 1,
        "grpcRoute": {
            "match": {
                "serviceName": "shop.orders.v1.OrderService",
                "hostname": {"suffix": ".example.com"},
                "port": 9443,
                "metadata": [
                    {"name": "x-tenant", "match": {"exact": "acme"}},
                    {"name": "x-beta", "invert": True, "match": {"prefix": "yes"}},
                ],
            },
            "action": {
                "target": {"virtualService": {"virtualServiceName": service}, "port": 9090},
                "rewrite": {"hostname": {"defaultTargetHostname": "ENABLED"}},
            },
        },
    }
