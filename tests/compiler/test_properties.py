"""Properties over random valid meshes: every snapshot is consistent, versions are
deterministic (same input → same version, whatever the input order), and a change
recompiles exactly enough: proxies outside `dependents` keep their version. Most meshes
have automatic mTLS on, so a callee's RBAC depends on its callers' backends (authz.py)."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.compiler import MeshContext, ProxyRequest, compile_proxy, dependents, proxies_of

NODES = ["a", "b", "c", "d", "e"]
SERVICES = ["s1.local", "s2.local", "s3.local", "s4.local"]
ROUTERS = ["r1", "r2"]
PORTS = [8080, 8443, 9090, 5432]
PROTOCOLS = ["http", "http2", "grpc", "tcp"]

ports = st.sampled_from(PORTS)
protocols = st.sampled_from(PROTOCOLS)
duration = st.builds(
    lambda u, v: {"unit": u, "value": v}, st.sampled_from(["s", "ms"]), st.integers(0, 5000)
)


@st.composite
def listener(draw):
    protocol = draw(protocols)
    out = {"portMapping": {"port": draw(ports), "protocol": protocol}}
    if draw(st.booleans()):
        out["tls"] = {
            "mode": draw(st.sampled_from(["STRICT", "PERMISSIVE", "DISABLED"])),
            "certificate": {"sds": {"secretName": "cert"}},
        }
        if draw(st.booleans()):
            out["tls"]["validation"] = {"trust": {"sds": {"secretName": "bundle"}}}
            if draw(st.booleans()):
                sans = {"match": {"exact": ["spiffe://partner.example/x", "x.example"]}}
                out["tls"]["validation"]["subjectAlternativeNames"] = sans
    if draw(st.booleans()):
        out["healthCheck"] = {
            "protocol": protocol,
            "intervalMillis": 5000,
            "timeoutMillis": 2000,
            "healthyThreshold": 2,
            "unhealthyThreshold": 2,
        }
    if draw(st.booleans()):
        out["outlierDetection"] = {
            "maxServerErrors": 3,
            "interval": draw(duration),
            "baseEjectionDuration": draw(duration),
            "maxEjectionPercent": 50,
        }
    return out


@st.composite
def node_spec(draw):
    spec = {"listeners": draw(st.lists(listener(), min_size=1, max_size=2))}
    backends = draw(st.lists(st.sampled_from(SERVICES), min_size=1, max_size=3, unique=True))
    spec["backends"] = [{"virtualService": {"virtualServiceName": s}} for s in backends]
    discovery = draw(st.sampled_from(["none", "dns", "dns-endpoints", "cloudmap"]))
    if discovery.startswith("dns"):
        spec["serviceDiscovery"] = {"dns": {"hostname": "x.internal"}}
        if discovery == "dns-endpoints":
            spec["serviceDiscovery"]["dns"]["responseType"] = "ENDPOINTS"
    elif discovery == "cloudmap":
        spec["serviceDiscovery"] = {"awsCloudMap": {"namespaceName": "n", "serviceName": "s"}}
    if draw(st.booleans()):
        spec["backendDefaults"] = {
            "clientPolicy": {"tls": {"validation": {"trust": {"sds": {"secretName": "bundle"}}}}}
        }
    return spec


@st.composite
def route_spec(draw):
    route_type = draw(st.sampled_from(["httpRoute", "http2Route", "grpcRoute", "tcpRoute"]))
    targets = [
        {"virtualNode": draw(st.sampled_from(NODES + ["gone"])), "weight": draw(st.integers(0, 5))}
        for _ in range(draw(st.integers(1, 3)))
    ]
    body = {"action": {"weightedTargets": targets}}
    if route_type in ("httpRoute", "http2Route"):
        body["match"] = {"prefix": draw(st.sampled_from(["/", "/a", "/b"]))}
    elif route_type == "grpcRoute":
        body["match"] = {"serviceName": "svc"}
    if route_type != "tcpRoute" and draw(st.booleans()):
        body["retryPolicy"] = {
            "maxRetries": 2,
            "perRetryTimeout": draw(duration),
            "httpRetryEvents": ["server-error"],
        }
    spec = {route_type: body}
    if draw(st.booleans()):
        spec["priority"] = draw(st.integers(0, 1000))
    return spec


@st.composite
def mesh(draw):
    names = draw(st.lists(st.sampled_from(NODES), min_size=2, unique=True))
    nodes = {n: draw(node_spec()) for n in names}
    services = {}
    for s in draw(st.lists(st.sampled_from(SERVICES), min_size=2, unique=True)):
        kind = draw(st.sampled_from(["virtualNode", "virtualRouter", "virtualRouter", None]))
        if kind == "virtualNode":
            services[s] = {"provider": {kind: {"virtualNodeName": draw(st.sampled_from(NODES))}}}
        elif kind == "virtualRouter":
            services[s] = {
                "provider": {kind: {"virtualRouterName": draw(st.sampled_from(ROUTERS))}}
            }
        else:
            services[s] = {}
    routers, routes = {}, {}
    for r in draw(st.lists(st.sampled_from(ROUTERS), min_size=1, unique=True)):
        listeners = draw(st.lists(st.tuples(ports, protocols), min_size=1, max_size=2))
        routers[r] = {
            "listeners": [{"portMapping": {"port": p, "protocol": q}} for p, q in listeners]
        }
        routes[r] = {f"rt{i}": draw(route_spec()) for i in range(draw(st.integers(1, 3)))}
    gateways, gateway_routes = {}, {}
    if draw(st.booleans()):
        gateways["gw"] = {"listeners": [{"portMapping": {"port": 8000, "protocol": "http"}}]}
        gateway_routes["gw"] = {
            f"g{i}": {
                "httpRoute": {
                    "match": {"prefix": f"/{i}"},
                    "action": {
                        "target": {"virtualService": {"virtualServiceName": s}, "port": draw(ports)}
                    },
                }
            }
            for i, s in enumerate(draw(st.lists(st.sampled_from(SERVICES), max_size=3)))
        }
    endpoints = {(n, 8080): [{"address": "10.0.0.1", "port": 8080}] for n in nodes}
    return {
        "mesh_spec": {"egressFilter": {"type": draw(st.sampled_from(["ALLOW_ALL", "DROP_ALL"]))}},
        # Mostly on: authorization is where a callee depends on its callers' backends.
        "mtls_mode": draw(st.sampled_from(["DISABLED", "PERMISSIVE", "STRICT", "STRICT"])),
        "trust_domain": "111111111111.meshplane.local",
        "virtual_nodes": nodes,
        "virtual_services": services,
        "virtual_routers": routers,
        "routes": routes,
        "virtual_gateways": gateways,
        "gateway_routes": gateway_routes,
        "endpoints": endpoints,
    }


def build(data: dict, reverse: bool = False) -> MeshContext:
    def order(d):
        items = list(d.items())
        return dict(reversed(items) if reverse else items)

    return MeshContext.from_specs(
        "m",
        data["mesh_spec"],
        **{k: order(v) if isinstance(v, dict) else v for k, v in data.items() if k != "mesh_spec"},
    )


def every_request(ctx: MeshContext) -> list[ProxyRequest]:
    out = []
    for proxy in proxies_of(ctx):
        out.append(proxy)
        if proxy.kind == "virtualNode":
            out.append(ProxyRequest(proxy.kind, proxy.name, consumer="grpc"))
            out.append(ProxyRequest(proxy.kind, proxy.name, interception="explicit"))
    return out


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(mesh())
def test_random_meshes_compile_to_consistent_deterministic_snapshots(data):
    ctx, again, reordered = build(data), build(data), build(data, reverse=True)
    for proxy in every_request(ctx):
        snapshot = compile_proxy(ctx, proxy)
        assert snapshot.consistent() == [], (proxy, snapshot.consistent())
        assert compile_proxy(again, proxy).version == snapshot.version
        assert compile_proxy(reordered, proxy).version == snapshot.version


CHANGES = st.sampled_from(
    ["virtualNode", "virtualService", "virtualRouter", "route", "gatewayRoute", "endpoints"]
)


@st.composite
def mesh_and_change(draw):
    data = draw(mesh())
    kind = draw(CHANGES)
    changed = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    if kind == "virtualNode":
        name = draw(st.sampled_from(NODES))
        nodes = dict(data["virtual_nodes"])
        if name in nodes and draw(st.booleans()):
            del nodes[name]
        else:
            nodes[name] = draw(node_spec())
        changed["virtual_nodes"] = nodes
        # As the loader's fingerprints report it: the node, and its backends apart.
        return data, changed, {("virtualNode", name), ("backends", name)}
    elif kind == "virtualService":
        name = draw(st.sampled_from(SERVICES))
        services = dict(data["virtual_services"])
        services[name] = {
            "provider": {"virtualNode": {"virtualNodeName": draw(st.sampled_from(NODES))}}
        }
        changed["virtual_services"] = services
    elif kind in ("virtualRouter", "route"):
        name = draw(st.sampled_from(ROUTERS))
        routers, routes = dict(data["virtual_routers"]), dict(data["routes"])
        routers.setdefault(
            name, {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}
        )
        routes[name] = {**routes.get(name, {}), "rt0": draw(route_spec())}
        changed["virtual_routers"], changed["routes"] = routers, routes
        name = f"{name}/rt0" if kind == "route" else name
        if kind == "virtualRouter":
            return data, changed, {("virtualRouter", name), ("route", f"{name}/rt0")}
    elif kind == "gatewayRoute":
        name = "gw"
        changed["virtual_gateways"] = {
            "gw": {"listeners": [{"portMapping": {"port": 8000, "protocol": "http"}}]}
        }
        changed["gateway_routes"] = {
            "gw": {
                "new": {
                    "httpRoute": {
                        "match": {"prefix": "/"},
                        "action": {
                            "target": {
                                "virtualService": {
                                    "virtualServiceName": draw(st.sampled_from(SERVICES))
                                },
                                "port": 8080,
                            }
                        },
                    }
                }
            }
        }
        return data, changed, {("virtualGateway", "gw"), ("gatewayRoute", "gw/new")}
    else:
        name = draw(st.sampled_from(NODES))
        endpoints = dict(data["endpoints"])
        listeners = data["virtual_nodes"].get(name, {}).get("listeners") or [{}]
        port = listeners[0].get("portMapping", {}).get("port", 8080)
        endpoints[(name, port)] = [{"address": "10.9.9.9", "port": port}]
        changed["endpoints"] = endpoints
    return data, changed, {(kind, name)}


@FAST
@given(mesh_and_change())
def test_proxies_outside_dependents_are_unchanged(case):
    before_data, after_data, changes = case
    before, after = build(before_data), build(after_data)
    affected = dependents(after, changes, previous=before)
    for proxy in every_request(after):
        if (proxy.kind, proxy.name) in affected:
            continue
        old, new = compile_proxy(before, proxy), compile_proxy(after, proxy)
        assert old.version == new.version, (proxy, changes)
