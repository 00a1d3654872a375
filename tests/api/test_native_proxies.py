"""Native API of the compile pipeline: static endpoints of a virtual node, and what each
proxy receives (list, variants, Envoy JSON config, diffs, history). Every endpoint is held
to the endpoint contract; behaviour beyond it is tested below."""

import pytest
import requests

from meshapi.models import Endpoint, ProxyConfig
from meshapi.services import endpoints as endpoint_service
from meshapi.services import resources
from meshapi.services.kinds import VIRTUAL_NODE
from tenants.models import AuditEvent
from tests.support.endpoints import Call, EndpointContract
from tests.support.endpoints import Endpoint as ApiEndpoint
from tests.workers import meshes
from workers.pipeline import run_compile

V = "/api/v1"
M = "alicemesh"
NODE = f"{V}/meshes/{M}/virtual-nodes/catalog-v1/endpoints"
FRONTEND = f"{V}/meshes/{M}/proxies/virtualNode/frontend"


def build_world(alice) -> dict:
    t = alice.tenant
    mesh = meshes.shop(t, M, eds=True)
    endpoint = endpoint_service.add_static(
        t, meshes.WRITER, mesh_name=M, node_name="catalog-v1", port=8080, address="10.0.0.1"
    )
    run_compile(mesh.id)
    older = ProxyConfig.objects.get(mesh=mesh, name="frontend").current.version
    meshes.split(t, M, 50, 50)
    run_compile(mesh.id)
    current = ProxyConfig.objects.get(mesh=mesh, name="frontend").current.version
    # "alice" appears in nothing charlie can list: lists here are all under alice's mesh.
    return {
        "alice_marker": "alice",
        "mesh_id": mesh.id,
        "endpoint_id": endpoint.pk,
        "older": older,
        "current": current,
    }


def _grow_endpoints(alice, world):
    for i in range(10):
        endpoint_service.add_static(
            alice.tenant,
            meshes.WRITER,
            mesh_name=M,
            node_name="catalog-v1",
            port=8080,
            address=f"10.0.1.{i}",
        )


def _grow_proxies(alice, world):
    for i in range(10):
        spec = {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}
        resources.create(
            alice.tenant, VIRTUAL_NODE, meshes.WRITER, mesh_name=M, name=f"n{i}", spec=spec
        )
    run_compile(world["mesh_id"])


def _endpoints_listed(world, body):
    assert [(e["address"], e["port"], e["source"]) for e in body["results"]] == [
        ("10.0.0.1", 8080, "static")
    ], body


def _endpoint(world, body):
    assert body["id"] == world["endpoint_id"] and body["virtualNodeName"] == "catalog-v1", body
    assert body["health"] == "HEALTHY" and body["instanceId"] == "", body


def _created(world, body):
    assert body["address"] == "10.9.9.9" and body["source"] == "static", body


def _proxies_listed(world, body):
    rows = {(p["kind"], p["name"]): p for p in body["results"]}
    assert set(rows) == {
        ("virtualGateway", "shop-gateway"),
        ("virtualNode", "catalog-v1"),
        ("virtualNode", "catalog-v2"),
        ("virtualNode", "frontend"),
    }, body
    frontend = rows[("virtualNode", "frontend")]
    assert frontend["version"] == world["current"], frontend
    assert frontend["nodeId"] == f"mesh/{M}/virtualNode/frontend", frontend
    assert frontend["compiledRevision"] > 0 and frontend["compiledAt"], frontend
    assert frontend["warnings"] == [], frontend


def _proxy(world, body):
    assert body["nodeId"] == f"mesh/{M}/virtualNode/frontend", body
    assert [(v["consumer"], v["interception"], v["version"]) for v in body["variants"]] == [
        ("envoy", "redirect", world["current"])
    ], body


def _config(world, body):
    assert body["version"] == world["current"] and body["stored"] and body["current"], body
    assert [c["name"] for c in body["listeners"]] == ["egress", "ingress"], body
    clusters = {c["name"]: c for c in body["clusters"]}
    assert clusters["upstream/catalog-v1/8080"]["type"] == "EDS", clusters
    (cla,) = [e for e in body["endpoints"] if e["cluster_name"] == "upstream/catalog-v1/8080"]
    address = cla["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert address == {"address": "10.0.0.1", "port_value": 8080}, cla
    assert set(body["typeVersions"]) == {"clusters", "endpoints", "listeners", "routes", "secrets"}


def _history(world, body):
    versions = [(v["version"], v["current"]) for v in body["results"]]
    assert versions[:2] == [(world["current"], True), (world["older"], False)], body


def E(id_, method, path, write=False, **kw) -> ApiEndpoint:  # noqa: N802 - a table row
    body = kw.pop("body", None)
    return ApiEndpoint(
        f"native {id_}", "native", write, lambda w: Call(method, path(w), body), **kw
    )


ENDPOINTS = [
    E("ListEndpoints", "GET", lambda w: f"{NODE}/", check=_endpoints_listed, grow=_grow_endpoints),
    E(
        "CreateStaticEndpoint",
        "POST",
        lambda w: f"{NODE}/",
        True,
        body={"port": 8080, "address": "10.9.9.9"},
        ok_status=201,
        check=_created,
    ),
    E("GetEndpoint", "GET", lambda w: f"{NODE}/{w['endpoint_id']}", check=_endpoint),
    E(
        "DeleteStaticEndpoint",
        "DELETE",
        lambda w: f"{NODE}/{w['endpoint_id']}",
        True,
        ok_status=204,
    ),
    E(
        "ListProxies",
        "GET",
        lambda w: f"{V}/meshes/{M}/proxies/",
        check=_proxies_listed,
        grow=_grow_proxies,
    ),
    E("GetProxy", "GET", lambda w: FRONTEND, check=_proxy),
    E("GetProxyConfig", "GET", lambda w: f"{FRONTEND}/config", check=_config),
    E("ListProxyHistory", "GET", lambda w: f"{FRONTEND}/history", check=_history),
]


class TestNativeProxyEndpoints(EndpointContract):
    ENDPOINTS = ENDPOINTS

    @pytest.fixture
    def world(self, alice):
        return build_world(alice)


# ---------------------------------------------------------------- behaviour


@pytest.fixture
def world(alice):
    return build_world(alice)


def get(alice, path: str, **params):
    return requests.get(alice.base_url + path, params=params, headers=alice.bearer, timeout=30)


def test_diff_between_stored_versions_is_a_readable_unified_diff(alice, world):
    response = get(alice, f"{FRONTEND}/config", diff=world["older"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == world["current"] and body["diffFrom"] == world["older"]
    assert "listeners" not in body
    lines = body["diff"].splitlines()
    assert lines[0] == f"--- mesh/{M}/virtualNode/frontend@{world['older']}"
    assert lines[1] == f"+++ mesh/{M}/virtualNode/frontend@{world['current']}"
    changed = sorted(" ".join(line.split()) for line in lines[2:] if line[:1] in "+-")
    assert changed == ['+ "weight": 50', '+ "weight": 50', '- "weight": 10', '- "weight": 90']
    # An older version itself, and the diff the other way round.
    older = get(alice, f"{FRONTEND}/config", version=world["older"]).json()
    assert older["version"] == world["older"] and not older["current"]
    back = get(alice, f"{FRONTEND}/config", version=world["older"], diff=world["current"]).json()
    assert '- "weight": 50' in [" ".join(x.split()) for x in back["diff"].splitlines()]


@pytest.mark.parametrize(
    "path, params, message",
    [
        ("/api/v1/meshes/nosuch/proxies/", {}, "Mesh 'nosuch' not found."),
        (
            f"{V}/meshes/{M}/proxies/virtualNode/nosuch/config",
            {},
            "Virtual node 'nosuch' not found",
        ),
        (
            f"{V}/meshes/{M}/proxies/virtualGateway/frontend/history",
            {},
            "Virtual gateway 'frontend' not found",
        ),
        (f"{FRONTEND}/config", {"diff": "0" * 32}, f"Version '{'0' * 32}' of virtualNode/frontend"),
        (f"{FRONTEND}/config", {"version": "abc"}, "is not stored"),
        (f"{FRONTEND}/config", {"consumer": "grpc", "diff": "abc"}, "has not been compiled yet"),
    ],
)
def test_unknown_meshes_proxies_and_versions_answer_404(alice, world, path, params, message):
    response = get(alice, path, **params)
    assert response.status_code == 404, response.text
    assert message in response.json()["detail"], response.text


def test_bad_variants_answer_400_naming_the_parameter(alice, world):
    response = get(alice, f"{FRONTEND}/config", consumer="istio")
    assert response.status_code == 400 and "consumer" in response.json(), response.text
    response = get(
        alice, f"{V}/meshes/{M}/proxies/virtualGateway/shop-gateway/config", consumer="grpc"
    )
    assert response.status_code == 400, response.text
    assert "always Envoy" in response.json()["consumer"][0]


def test_a_new_variant_is_compiled_on_demand_then_kept_compiled(alice, world):
    response = get(alice, f"{FRONTEND}/config", consumer="grpc", mode="explicit")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stored"] is False and body["consumer"] == "grpc"
    api_listeners = [x["name"] for x in body["listeners"] if "api_listener" in x]
    assert "catalog.shop.local" in api_listeners, body
    row = ProxyConfig.objects.get(name="frontend", consumer="grpc", interception="explicit")
    assert row.current is None  # asked for: the next compile keeps it
    run_compile(world["mesh_id"])
    again = get(alice, f"{FRONTEND}/config", consumer="grpc", mode="explicit").json()
    assert again["stored"] is True and again["version"] == body["version"]
    listed = get(alice, f"{V}/meshes/{M}/proxies/", consumer="grpc", mode="explicit").json()
    rows = {p["name"]: p for p in listed["results"]}
    assert rows["frontend"]["version"] == body["version"]
    assert rows["shop-gateway"]["consumer"] == "envoy"


def test_static_endpoint_writes_are_checked_audited_and_only_static_ones_deleted(alice, world):
    def post(node, body):
        path = f"{V}/meshes/{M}/virtual-nodes/{node}/endpoints/"
        return requests.post(alice.base_url + path, json=body, headers=alice.bearer, timeout=30)

    bad_port = post("catalog-v1", {"port": 9090, "address": "10.0.0.2"})
    assert bad_port.status_code == 400
    assert bad_port.json() == {
        "port": ["port: virtual node 'catalog-v1' has no listener on port 9090; use one of 8080."]
    }
    bad_address = post("catalog-v1", {"port": 8080, "address": "not an address"})
    assert bad_address.status_code == 400 and "address" in bad_address.json()
    unknown = post("catalog-v1", {"port": 8080, "address": "10.0.0.3", "weight": 3})
    assert unknown.status_code == 400 and "weight" in unknown.json()
    dns = post("frontend", {"port": 8080, "address": "10.0.0.2"})
    assert dns.status_code == 400 and "serviceDiscovery.dns" in dns.json()["virtualNode"][0]
    again = post("catalog-v1", {"port": 8080, "address": "10.0.0.1"})
    assert again.status_code == 409 and "already a static endpoint" in again.json()["detail"]
    assert post("nosuch", {"port": 8080, "address": "10.0.0.2"}).status_code == 404

    made = post("catalog-v1", {"port": 8080, "address": "db-1.internal", "health": "DRAINING"})
    assert made.status_code == 201, made.text
    event = AuditEvent.objects.filter(action="CreateStaticEndpoint").latest("id")
    assert event.actor == "alice@example.com" or "alice" in event.actor
    assert event.resource_arn.endswith(f":mesh/{M}/virtualNode/catalog-v1")
    assert event.after["address"] == "db-1.internal" and event.after["health"] == "DRAINING"
    assert not AuditEvent.objects.filter(action="CreateStaticEndpoint", after__address="10.0.0.2")

    endpoint_service.register(
        alice.tenant, mesh_name=M, node_name="catalog-v1", port=8080, address="10.0.0.5"
    )
    registered = Endpoint.objects.get(address="10.0.0.5")
    path = f"{V}/meshes/{M}/virtual-nodes/catalog-v1/endpoints/{registered.pk}"
    refused = requests.delete(alice.base_url + path, headers=alice.bearer, timeout=30)
    assert refused.status_code == 409 and "registered, not static" in refused.json()["detail"]
    path = f"{V}/meshes/{M}/virtual-nodes/catalog-v1/endpoints/{made.json()['id']}"
    assert (
        requests.delete(alice.base_url + path, headers=alice.bearer, timeout=30).status_code == 204
    )
    assert AuditEvent.objects.filter(action="DeleteStaticEndpoint").count() == 1
    listed = get(alice, f"{V}/meshes/{M}/virtual-nodes/catalog-v1/endpoints/").json()
    assert [(e["address"], e["source"]) for e in listed["results"]] == [
        ("10.0.0.1", "static"),
        ("10.0.0.5", "registered"),
    ]


def test_an_endpoint_change_moves_only_the_endpoints_type_version(alice, world):
    before = get(alice, f"{FRONTEND}/config").json()["typeVersions"]
    path = f"{V}/meshes/{M}/virtual-nodes/catalog-v2/endpoints/"
    made = requests.post(
        alice.base_url + path,
        json={"port": 8080, "address": "10.0.2.1"},
        headers=alice.bearer,
        timeout=30,
    )
    assert made.status_code == 201, made.text
    run_compile(world["mesh_id"])
    after = get(alice, f"{FRONTEND}/config").json()["typeVersions"]
    assert {t for t in after if after[t] != before[t]} == {"endpoints"}


def _listener_ports(config: dict) -> set[int]:
    return {x["address"]["socket_address"]["port_value"] for x in config["listeners"]}


def test_explicit_ports_pick_the_variant_shown_and_bad_ports_name_the_field(alice, world):
    ports = {"mode": "explicit", "app_port": 9001, "ingress_port": 16000, "egress_port": 16100}
    response = get(alice, f"{FRONTEND}/config", **ports)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["appPort"], body["ingressPort"], body["egressPort"]) == (9001, 16000, 16100)
    assert 16000 in _listener_ports(body) and 15000 not in _listener_ports(body)
    assert body["metadata"]["egress_ports"] == {"catalog.shop.local:8080": 16100}
    # Two proxies binding one port fail to bind instead of sharing its connections.
    assert {x.get("enable_reuse_port") for x in body["listeners"]} == {False}
    default = get(alice, f"{FRONTEND}/config", mode="explicit").json()
    assert default["ingressPort"] is None and 15000 in _listener_ports(default)

    run_compile(world["mesh_id"])
    variants = get(alice, FRONTEND).json()["variants"]
    shown = {(v["interception"], v["ingressPort"]): v["version"] for v in variants}
    assert shown[("explicit", 16000)] == body["version"]
    assert ("explicit", None) in shown and ("redirect", None) in shown
    history = get(alice, f"{FRONTEND}/history", **ports).json()["results"]
    assert [h["version"] for h in history] == [body["version"]]

    for params, field in [
        ({"mode": "explicit", "ingress_port": 0}, "ingress_port"),
        ({"mode": "explicit", "egress_port": 70000}, "egress_port"),
        ({"mode": "explicit", "app_port": "http"}, "app_port"),
        ({"app_port": 9001}, "app_port"),  # redirect: iptables decides the ports
    ]:
        refused = get(alice, f"{FRONTEND}/config", **params)
        assert refused.status_code == 400 and list(refused.json()) == [field], refused.text
    assert "mode=explicit" in get(alice, f"{FRONTEND}/config", app_port=9001).json()["app_port"][0]
    gateway = f"{V}/meshes/{M}/proxies/virtualGateway/shop-gateway/config"
    refused = get(alice, gateway, mode="explicit", ingress_port=16000)
    assert refused.status_code == 400 and "gateway" in refused.json()["ingress_port"][0]


def test_an_endpoint_with_a_target_port_is_reached_there(alice, world):
    """An explicit-mode proxy serves the node's listener port 8080 at its own ingress port:
    callers' EDS address that port, and the API shows both."""
    endpoint_service.register(
        alice.tenant,
        mesh_name=M,
        node_name="catalog-v1",
        port=8080,
        address="10.0.0.7",
        instance_id="cat-1",
        target_port=16000,
    )
    run_compile(world["mesh_id"])
    listed = get(alice, f"{V}/meshes/{M}/virtual-nodes/catalog-v1/endpoints/").json()
    rows = {e["address"]: (e["port"], e["targetPort"]) for e in listed["results"]}
    assert rows == {"10.0.0.1": (8080, 8080), "10.0.0.7": (8080, 16000)}
    eds = get(alice, f"{FRONTEND}/config").json()["endpoints"]
    addresses = {
        (
            lb["endpoint"]["address"]["socket_address"]["address"],
            lb["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for cla in eds
        for locality in cla.get("endpoints", [])
        for lb in locality["lb_endpoints"]
    }
    assert {("10.0.0.1", 8080), ("10.0.0.7", 16000)} <= addresses
    # The instance came back on other ports: its old target is replaced, not kept.
    endpoint_service.register(
        alice.tenant,
        mesh_name=M,
        node_name="catalog-v1",
        port=8080,
        address="10.0.0.7",
        instance_id="cat-1",
        target_port=17000,
    )
    assert list(Endpoint.objects.filter(address="10.0.0.7").values_list("port", "target_port")) == [
        (8080, 17000)
    ]

    def post(body):
        path = f"{alice.base_url}{V}/meshes/{M}/virtual-nodes/catalog-v1/endpoints/"
        return requests.post(path, json=body, headers=alice.bearer, timeout=30)

    made = post({"port": 8080, "address": "10.0.0.8", "targetPort": 18000})
    assert made.status_code == 201 and made.json()["targetPort"] == 18000, made.text
    bad = post({"port": 8080, "address": "10.0.0.9", "targetPort": 0})
    assert bad.status_code == 400 and list(bad.json()) == ["targetPort"], bad.text
