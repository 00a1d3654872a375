"""Golden cases: testdata/<case>.input.yaml (App Mesh specs + proxies) → <case>.golden.json.

Input keys: mesh {name, spec}, trustBundle, mtls {mode, trustDomain} (the mesh's automatic
mTLS policy; absent = DISABLED), virtualNodes {name: spec}, virtualServices,
virtualRouters {name: {spec, routes: {name: spec}}}, virtualGateways {name: {spec,
gatewayRoutes}}, endpoints {"<node>:<port>": [{address, port, source, health}]}, proxies
[{kind, name, consumer, interception, appPort, ingressPort, egressPort}].
"""

import json
import pathlib

import yaml

from workers.compiler import MeshContext, ProxyRequest, Snapshot, compile_proxy

TESTDATA = pathlib.Path(__file__).parent / "testdata"


def case_names() -> list[str]:
    return sorted(p.name.removesuffix(".input.yaml") for p in TESTDATA.glob("*.input.yaml"))


def load(case: str) -> dict:
    return yaml.safe_load((TESTDATA / f"{case}.input.yaml").read_text())


def context(data: dict) -> MeshContext:
    routers = data.get("virtualRouters") or {}
    gateways = data.get("virtualGateways") or {}
    endpoints = {}
    for key, items in (data.get("endpoints") or {}).items():
        node, port = key.rsplit(":", 1)
        endpoints[(node, int(port))] = items
    return MeshContext.from_specs(
        data["mesh"]["name"],
        data["mesh"].get("spec") or {},
        virtual_nodes=data.get("virtualNodes") or {},
        virtual_services=data.get("virtualServices") or {},
        virtual_routers={n: r.get("spec") or {} for n, r in routers.items()},
        routes={n: r.get("routes") or {} for n, r in routers.items()},
        virtual_gateways={n: g.get("spec") or {} for n, g in gateways.items()},
        gateway_routes={n: g.get("gatewayRoutes") or {} for n, g in gateways.items()},
        endpoints=endpoints,
        trust_bundle=data.get("trustBundle", ""),
        mtls_mode=(data.get("mtls") or {}).get("mode", "DISABLED"),
        trust_domain=(data.get("mtls") or {}).get("trustDomain", ""),
    )


def proxies(data: dict) -> list[ProxyRequest]:
    out = []
    for p in data["proxies"]:
        kwargs = {
            "consumer": p.get("consumer", "envoy"),
            "interception": p.get("interception", "redirect"),
            "app_port": p.get("appPort"),
        }
        for key, field in (("ingressPort", "ingress_port"), ("egressPort", "egress_port")):
            if key in p:
                kwargs[field] = p[key]
        out.append(ProxyRequest(p.get("kind", "virtualNode"), p["name"], **kwargs))
    return out


def compile_case(case: str) -> list[Snapshot]:
    data = load(case)
    ctx = context(data)
    return [compile_proxy(ctx, p) for p in proxies(data)]


def key(snapshot: Snapshot) -> str:
    return f"{snapshot.node_id} {snapshot.proxy.consumer} {snapshot.proxy.interception}"


def render(snapshots: list[Snapshot]) -> str:
    return json.dumps({key(s): s.to_json() for s in snapshots}, indent=2, sort_keys=True) + "\n"
