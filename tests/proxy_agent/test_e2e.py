"""End to end: the live API server, `serve_xds` (mTLS ADS + Join), a mesh built through
boto3, a join token from the native API, and `meshagent run` with a real Envoy in explicit
mode (listening on the ports it declares) in front of a tiny HTTP backend.

- a request to Envoy's egress listener for the backend's virtual service reaches it;
- the control plane's record of the instance shows Envoy's ACKs;
- control plane killed → traffic keeps flowing;
- agent and Envoy restarted while it is down → they serve the cached config (and the
  stored identity: the single-use join token is not needed again);
- control plane back → the stream resumes without re-pushing unchanged resources;
- short certificate lifetimes → the agent renews several times with zero failed requests.
"""

import http.client
import os
import ssl

import pytest
import requests
from cryptography import x509

from tests.proxy_agent.processes import AgentProcess, HttpBackend, envoy_available
from tests.proxy_agent.support import free_port, try_get, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not envoy_available(), reason="no Envoy binary (make envoy)"),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL"),
]

MESH = "shop"
SERVICE = "catalog.shop.local"
NODE = f"mesh/{MESH}/virtualNode/front"


@pytest.fixture
def ports() -> dict[str, int]:
    """front's explicit-mode listener ports, free ones rather than the defaults 15000/15001,
    so test runs side by side on one machine never share a port. The agent declares them
    (--ingress-port/--egress-port) and the control plane compiles front's listeners there."""
    return {"ingress_port": free_port(), "egress_port": free_port()}


def _port_flags(ports: dict[str, int]) -> list[str]:
    return [
        "--ingress-port",
        str(ports["ingress_port"]),
        "--egress-port",
        str(ports["egress_port"]),
    ]


@pytest.fixture
def worker(transactional_db):
    """A Celery worker in a thread, consuming this run's queue on the real broker."""
    from celery.contrib.testing.worker import start_worker

    from workers.celery import app

    app.control.purge()
    with start_worker(app, perform_ping_check=False, pool="solo", loglevel="WARNING"):
        yield


@pytest.fixture
def backend():
    server = HttpBackend("catalog")
    yield server
    server.stop()


@pytest.fixture
def mesh(alice, backend, worker):
    from tests.xds.support import add_static_endpoint, wait_compiled

    client = alice.appmesh()
    client.create_mesh(meshName=MESH)
    client.create_virtual_node(
        meshName=MESH,
        virtualNodeName="catalog",
        spec={"listeners": [{"portMapping": {"port": backend.port, "protocol": "http"}}]},
    )
    client.create_virtual_service(
        meshName=MESH,
        virtualServiceName=SERVICE,
        spec={"provider": {"virtualNode": {"virtualNodeName": "catalog"}}},
    )
    client.create_virtual_node(
        meshName=MESH,
        virtualNodeName="front",
        spec={"backends": [{"virtualService": {"virtualServiceName": SERVICE}}]},
    )
    add_static_endpoint(alice, MESH, "catalog", backend.port)
    wait_compiled(alice.tenant, MESH)
    return client


def _start_xds(port: int = 0):
    from tests.xds.support import XdsProcess

    return XdsProcess(port=port, join_port=free_port())


def _join_files(alice, tmp_path) -> tuple:
    api = f"{alice.base_url}/api/v1"
    token = requests.post(
        f"{api}/meshes/{MESH}/join-tokens",
        json={"kind": "virtualNode", "name": "front"},
        headers=alice.bearer,
        timeout=30,
    )
    assert token.status_code == 201, token.text
    ca = requests.get(f"{api}/identity/ca", timeout=30)
    assert ca.status_code == 200, ca.text
    token_file, ca_file = tmp_path / "join-token", tmp_path / "cp-ca.pem"
    token_file.write_text(token.json()["token"])
    ca_file.write_text(ca.text)
    return token_file, ca_file


def _agent(tmp_path, xds, token_file, ca_file, ports: dict[str, int]) -> AgentProcess:
    return AgentProcess(
        tmp_path / "front",
        "--control-plane", xds.ads, "--join-address", xds.join or "127.0.0.1:1",
        "--ca-file", str(ca_file), "--join-token-file", str(token_file), "--node", NODE,
        "--app-port", str(free_port()), *_port_flags(ports),
    )  # fmt: skip


def _instance(alice) -> dict:
    from tests.xds.support import proxy_detail

    instances = proxy_detail(alice, MESH, "virtualNode", "front")["instances"]
    return instances[0] if len(instances) == 1 else {}


def _endpoints(alice, node: str) -> list[tuple[str, int, int]]:
    """(source, listener port, target port) of the node's endpoints, from the native API."""
    from tests.xds.support import list_endpoints

    return [(e["source"], e["port"], e["targetPort"]) for e in list_endpoints(alice, MESH, node)]


def _egress_port(agent) -> int:
    ports = wait_for(
        lambda: {k: v for k, v in agent_ports(agent).items() if SERVICE in k},
        message=lambda: f"no egress listener for {SERVICE}: {agent_ports(agent)}",
    )
    [(_name, port)] = ports.items()
    return port


def agent_ports(agent) -> dict:
    import json

    code, body = agent.get("/ports")
    return json.loads(body) if code == 200 else {}


def _ok(port: int) -> bool:
    return _failure(port) is None


def _failure(port: int) -> str | None:
    """None when a GET through Envoy reaches the backend, else what came back instead."""
    got = try_get(port)
    if got is None:
        return "no connection"
    if got[0] == 200 and got[2] == b"catalog":
        return None
    return f"{got[0]} {got[1].get('x-envoy-upstream-service-time', '')} {got[2][:120]!r}"


def _failures(port: int, n: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for _ in range(n):
        reason = _failure(port)
        if reason is not None:
            out[reason] = out.get(reason, 0) + 1
    return out


def test_traffic_through_envoy_survives_the_control_plane_and_a_restart(
    alice, mesh, tmp_path, ports
):
    token_file, ca_file = _join_files(alice, tmp_path)
    xds = _start_xds()
    agent = _agent(tmp_path, xds, token_file, ca_file, ports)
    try:
        agent.wait_ready()
        port = _egress_port(agent)
        assert port == ports["egress_port"]
        wait_for(lambda: _ok(port), message=agent.log)
        status = agent.status()
        assert status["identity"]["spiffeId"].endswith("/" + NODE)
        assert status["upstream"]["connected"]
        instance = wait_for(
            lambda: (i := _instance(alice)) and i["connected"] and i.get("ackedVersions") and i,
            message="the control plane never saw the ACKs",
        )
        assert instance["consumer"] == "envoy" and instance["interception"] == "explicit"
        assert {"listeners", "clusters"} <= set(instance["ackedVersions"])

        # Control plane killed: traffic keeps flowing.
        ads_port = int(xds.ads.rsplit(":", 1)[1])
        xds.kill()
        wait_for(lambda: not agent.status()["upstream"]["connected"], message="still up?")
        assert _failures(port, 200) == {}

        # Agent and Envoy restarted while it is down: served from the cache.
        assert agent.stop() == 0
        token_file.write_text("used-up")  # the stored identity is enough
        agent = _agent(tmp_path, xds, token_file, ca_file, ports)
        agent.wait_ready()
        assert _egress_port(agent) == port
        assert _failures(port, 100) == {}

        # Control plane back on the same port: the stream resumes and nothing unchanged
        # is pushed again.
        held = agent.status()["cached"]
        xds = _start_xds(ads_port)
        wait_for(lambda: agent.status()["upstream"]["connected"], timeout=60, message=agent.log)
        instance = wait_for(
            lambda: (i := _instance(alice)) and i["connected"] and i["ackedVersions"] and i,
            message="not reconnected",
        )
        # The control plane learnt what Envoy holds from the stream's first requests ...
        assert {t: v for t, v in instance["ackedVersions"].items() if t in held} == held
        # ... and re-sent none of it (a version it did send would be a real change).
        resent = {
            t: v for t, v in agent.status()["upstream"]["versions"].items() if held.get(t) == v
        }
        assert resent == {}, (resent, xds.log())
        assert _ok(port)
    finally:
        agent.stop()
        xds.stop()


def test_a_wrong_join_token_is_a_clear_error(alice, mesh, tmp_path, ports):
    _, ca_file = _join_files(alice, tmp_path)
    bad = tmp_path / "bad-token"
    bad.write_text("mpjt_not-a-token")
    xds = _start_xds()
    agent = _agent(tmp_path, xds, bad, ca_file, ports)
    try:
        assert agent.proc.wait(60) == 1
        assert "cannot join the mesh" in agent.log() and "UNAUTHENTICATED" in agent.log()
    finally:
        agent.stop()
        xds.stop()


def _tls_get(port: int, bundle: str) -> tuple[bytes, int] | None:
    """GET / over TLS verified against the mesh trust bundle: (body, the server
    certificate's serial)."""
    context = ssl.create_default_context(cafile=bundle)
    context.check_hostname = False  # SPIFFE certificates name a URI, not a host
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read()
        der = conn.sock.getpeercert(binary_form=True)
        serial = x509.load_der_x509_certificate(der).serial_number
        return (body, serial) if response.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


def test_short_lived_certificates_rotate_without_failed_requests(alice, mesh, tmp_path, ports):
    """front's listener takes its certificate from `acm`, i.e. the workload identity over
    the agent's SDS; with 15 s certificates Envoy is handed new ones while serving."""
    from tests.xds.support import wait_compiled

    app = HttpBackend("front-app")
    arn = "arn:aws:acm:us-east-1:111111111111:certificate/front"
    mesh.update_virtual_node(
        meshName=MESH,
        virtualNodeName="front",
        spec={
            "backends": [{"virtualService": {"virtualServiceName": SERVICE}}],
            "listeners": [
                {
                    "portMapping": {"port": app.port, "protocol": "http"},
                    "tls": {"mode": "STRICT", "certificate": {"acm": {"certificateArn": arn}}},
                }
            ],
        },
    )
    wait_compiled(alice.tenant, MESH)
    response = requests.patch(
        f"{alice.base_url}/api/v1/meshes/{MESH}/identity",
        json={"certificateLifetimeSeconds": 15},
        headers=alice.bearer,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    token_file, ca_file = _join_files(alice, tmp_path)
    xds = _start_xds()
    agent = AgentProcess(
        tmp_path / "front",
        "--control-plane", xds.ads, "--join-address", xds.join, "--ca-file", str(ca_file),
        "--join-token-file", str(token_file), "--node", NODE, "--app-port", str(app.port),
        *_port_flags(ports),
    )  # fmt: skip
    bundle = str(tmp_path / "front" / "trust-bundle.pem")
    try:
        agent.wait_ready()
        ingress = wait_for(
            lambda: [p for n, p in agent_ports(agent).items() if n.startswith("ingress")],
            message=lambda: f"no ingress listener: {agent_ports(agent)}",
        )[0]
        assert ingress == ports["ingress_port"]  # the port the agent declared
        # front registered itself where callers reach it: listener app.port at its ingress.
        wait_for(
            lambda: _endpoints(alice, "front") == [("registered", app.port, ingress)],
            message=lambda: str(_endpoints(alice, "front")),
        )
        egress = _egress_port(agent)
        wait_for(lambda: _tls_get(ingress, bundle), message=agent.log)
        serials, failures, made = set(), {"ingress": 0, "egress": 0}, 0
        while agent.status()["identity"]["renewals"] < 3:
            made += 1
            got = _tls_get(ingress, bundle)
            failures["ingress"] += got is None or got[0] != b"front-app"
            failures["egress"] += not _ok(egress)
            if got:
                serials.add(got[1])
            assert made < 20000, agent.log()
        assert failures == {"ingress": 0, "egress": 0} and made > 0, (failures, made, agent.log())
        assert len(serials) >= 2, serials  # Envoy served renewed certificates
        assert agent.ready()
    finally:
        agent.stop()
        xds.stop()
        app.stop()


def test_insecure_development_mode_against_serve_xds_insecure(alice, mesh, tmp_path, ports):
    """`serve_xds --insecure` + `meshagent run --insecure --tenant`: no identity, plaintext,
    loopback only (local development): the same traffic path."""
    from tests.xds.support import XdsProcess

    xds = XdsProcess(insecure=True)
    agent = AgentProcess(
        tmp_path / "front",
        "--insecure", "--tenant", alice.tenant.account_id, "--control-plane", xds.ads,
        "--node", NODE, *_port_flags(ports),
    )  # fmt: skip
    try:
        agent.wait_ready()
        port = _egress_port(agent)
        wait_for(lambda: _ok(port), message=agent.log)
        assert "identity" not in agent.status()
        assert not (tmp_path / "front" / "identity.pem").exists()
    finally:
        agent.stop()
        xds.stop()


def test_a_route_envoy_rejects_leaves_the_last_good_serving_and_shows_in_the_api(
    alice, mesh, tmp_path, ports
):
    """A route update with a header regex RE2 cannot compile reaches Envoy; Envoy NACKs it,
    the agent forwards the NACK with Envoy's text, the API shows it, and requests keep
    following the last good route configuration."""
    from tests.xds.support import wait_compiled

    def route(match_headers: list) -> dict:
        match = {"prefix": "/", "headers": match_headers} if match_headers else {"prefix": "/"}
        return {
            "httpRoute": {
                "match": match,
                "action": {"weightedTargets": [{"virtualNode": "catalog", "weight": 1}]},
            }
        }

    mesh.create_virtual_router(
        meshName=MESH,
        virtualRouterName="catalog",
        spec={"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]},
    )
    mesh.create_route(meshName=MESH, virtualRouterName="catalog", routeName="all", spec=route([]))
    mesh.update_virtual_service(
        meshName=MESH,
        virtualServiceName=SERVICE,
        spec={"provider": {"virtualRouter": {"virtualRouterName": "catalog"}}},
    )
    wait_compiled(alice.tenant, MESH)
    token_file, ca_file = _join_files(alice, tmp_path)
    xds = _start_xds()
    agent = _agent(tmp_path, xds, token_file, ca_file, ports)
    try:
        agent.wait_ready()
        port = _egress_port(agent)
        wait_for(lambda: _ok(port), message=agent.log)
        acked = wait_for(
            lambda: (i := _instance(alice)) and i.get("ackedVersions", {}).get("routes"),
            message="routes never ACKed",
        )
        bad = [{"name": "x-user", "match": {"regex": "(unclosed"}, "invert": True}]
        mesh.update_route(
            meshName=MESH, virtualRouterName="catalog", routeName="all", spec=route(bad)
        )
        nack = wait_for(
            lambda: (i := _instance(alice)) and i.get("lastNack"),
            timeout=60,
            message=lambda: f"no NACK in the API: {_instance(alice)}\n{agent.log()}",
        )
        assert nack["type"] == "routes" and "unclosed" in str(nack["errorDetail"]), nack
        assert _instance(alice)["ackedVersions"]["routes"] == acked  # still the good one
        assert agent.status()["rejections"][-1]["type"] == "routes"
        assert _failures(port, 50) == {}  # the last good route configuration serves
    finally:
        agent.stop()
        xds.stop()
