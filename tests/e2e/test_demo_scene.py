"""`make demo` (`manage.py demo --scene`) as a user runs it, on embedded defaults (SQLite,
in-process tasks and pub/sub, no DATABASE_URL / REDIS_URL): the control plane in one
process, frontend / catalog-v1 / catalog-v2 / intruder each with a real meshagent + Envoy
in explicit mode.

What the demo prints is checked (the split over 1,000 requests within ±5 points of 90/10,
the header route, the caller's SPIFFE id, the intruder's 403, the 50/50 shift with zero
failed requests during the change), and the test sees for itself, at the ports the demo
printed: each catalog registered by its own agent at its Envoy ingress port (no static
endpoint), the header route, a plaintext connection to a STRICT ingress refused, a
certificate from another mesh refused, the intruder's 403; then Ctrl-C leaves no agent,
Envoy or listening port behind.
"""

import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
import requests

from meshapi.demo.scene import LoadClient, call_with_identity
from tests.e2e.test_demo_embedded import Demo, _embedded_env, _pid_alive, _port_is_free
from tests.support.live import ROOT, free_port

ENVOY = os.environ.get("MESHPLANE_ENVOY_BIN") or str(ROOT / ".tools/envoy/bin/envoy")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.access(ENVOY, os.X_OK), reason="no Envoy binary (make envoy)"),
]

READY = re.compile(r"Meshplane demo ready at (http://\S+)")
SPLIT = re.compile(
    r"(\d+) requests: catalog-v1 (\d+) \([\d.]+ %\), catalog-v2 (\d+) \([\d.]+ %\); failed (\d+)"
)
AGENT = re.compile(
    r"^\s+(\S+)\s+.*?(?:ingress :(\d+).*?)?\(meshagent pid (\d+), status :(\d+), "
    r"Envoy admin :(\d+)\)"
)


class SceneDemo(Demo):
    """`manage.py demo --scene` as `make demo` runs it, output read line by line."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--scene", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()


def _line(demo: Demo, prefix: str) -> str:
    found = [ln for ln in demo.lines if ln.startswith(prefix)]
    assert found, f"'{prefix}' not printed:\n{demo.output}"
    return found[0]


def _split(line: str) -> tuple[int, int, int, int]:
    total, v1, v2, failed = map(int, SPLIT.search(line).groups())
    return total, v1, v2, failed


def _refused(port: int, context: ssl.SSLContext | None = None) -> str:
    """How a connection to the port ends when it gets no HTTP answer (else fails)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock = context.wrap_socket(raw) if context else raw
        sock.sendall(b"GET / HTTP/1.1\r\nHost: catalog-v1\r\n\r\n")
        data = sock.recv(1024)
    except ssl.SSLError:
        return "tls alert"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    finally:
        raw.close()
    assert data == b"", f"got an answer: {data[:200]!r}"
    return "closed"


def _stranger_join_files(url: str, key_id: str, secret: str, tmp_path: Path) -> tuple[Path, Path]:
    """Join token and control-plane CA for another mesh (same tenant): mesh 'elsewhere',
    node 'stranger' (a real meshagent joins with them; no Envoy needed for a certificate)."""
    client = boto3.client(
        "appmesh",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )
    client.create_mesh(meshName="elsewhere")
    client.create_virtual_node(meshName="elsewhere", virtualNodeName="stranger", spec={})
    api = requests.Session()
    api.trust_env = False
    api.headers["Authorization"] = f"Bearer {key_id}:{secret}"
    token = api.post(
        f"{url}/api/v1/meshes/elsewhere/join-tokens",
        json={"kind": "virtualNode", "name": "stranger"},
        timeout=30,
    )
    assert token.status_code == 201, token.text
    ca = api.get(f"{url}/api/v1/identity/ca", timeout=30)
    (tmp_path / "token").write_text(token.json()["token"])
    (tmp_path / "ca.pem").write_text(ca.text)
    return tmp_path / "token", tmp_path / "ca.pem"


def test_make_demo_runs_the_mesh_scene(tmp_path):
    var_dir = tmp_path / "var"
    env = _embedded_env(var_dir)
    env["MESHPLANE_ENVOY_BIN"] = ENVOY
    port = free_port()
    demo = SceneDemo(env, port)
    try:
        url = demo.wait_for(READY, timeout=150)[1]
        assert "tasks: in-process" in demo.output
        account = re.search(r"account (\d{12})", demo.output)[1]
        trust_domain = f"spiffe://{account}.meshplane.local"

        # What the demo printed.
        total, v1, v2, failed = _split(_line(demo, "Canary 90/10"))
        assert (total, failed) == (1000, 0)
        assert abs(100 * v2 / total - 10) <= 5, (v1, v2)
        assert _split(_line(demo, "Header route")) == (20, 0, 20, 0)
        peer = _line(demo, "mTLS:").rsplit(" ", 1)[1]
        assert peer == f"{trust_domain}/mesh/shop/virtualNode/frontend"
        denied = _line(demo, "Denied:")
        assert f"{trust_domain}/mesh/shop/virtualNode/intruder" in denied
        assert "HTTP 403" in denied
        during = re.search(r"(\d+) requests during the change; failed (\d+)", demo.output)
        assert int(during[1]) >= 200 and int(during[2]) == 0, _line(demo, "Canary shift")
        total, v1, v2, failed = _split(_line(demo, "Canary 50/50"))
        assert (total, failed) == (1000, 0)
        assert abs(100 * v2 / total - 50) <= 5, (v1, v2)

        # What a user sees at the printed ports.
        agents = {m[1]: m for ln in demo.lines if (m := AGENT.match(ln))}
        assert set(agents) == {"frontend", "catalog-v1", "catalog-v2", "intruder"}
        frontend = int(re.search(r"curl -s http://127.0.0.1:(\d+)/", demo.output)[1])
        client = LoadClient(frontend)
        answers = [client.get({"x-canary": "v2"}) for _ in range(10)]
        client.close()
        assert {(s, b["catalog"]["service"]) for s, b in answers} == {(200, "catalog-v2")}

        # Each catalog is reached where its agent registered itself: its node's listener
        # port 8080 at its own Envoy ingress port. Nobody added an endpoint by hand.
        key_id, secret = demo.value("Access key id:"), demo.value("Secret access key:")
        api = requests.Session()
        api.trust_env = False
        api.headers["Authorization"] = f"Bearer {key_id}:{secret}"
        for name in ("catalog-v1", "catalog-v2"):
            listed = api.get(
                f"{url}/api/v1/meshes/shop/virtual-nodes/{name}/endpoints/", timeout=30
            )
            assert listed.status_code == 200, listed.text
            rows = [
                (e["source"], e["port"], e["address"], e["targetPort"])
                for e in listed.json()["results"]
            ]
            ingress = int(agents[name][2])
            assert rows == [("registered", 8080, "127.0.0.1", ingress)], rows
            assert (
                f"{name} endpoint (registered by its agent): listener 8080 at "
                f"127.0.0.1:{ingress}" in demo.output
            )

        catalog_v1 = int(agents["catalog-v1"][2])
        assert _refused(catalog_v1) in ("closed", "reset")  # plaintext
        scene_dir = var_dir / "demo/scene"
        shop_bundle = scene_dir / "intruder/trust-bundle.pem"
        code, body = call_with_identity(
            scene_dir / "intruder/identity.pem", shop_bundle, catalog_v1
        )
        assert (code, body) == (403, "RBAC: access denied")

        token_file, ca_file = _stranger_join_files(url, key_id, secret, tmp_path)
        stranger_dir = tmp_path / "stranger"
        stranger = subprocess.Popen(
            [
                sys.executable, "-m", "proxy_agent.cli", "run", "--no-envoy",
                "--control-plane", "127.0.0.1:1",
                "--join-address", re.search(r"Join (\S+)", demo.output)[1],
                "--ca-file", str(ca_file), "--join-token-file", str(token_file),
                "--node", "mesh/elsewhere/virtualNode/stranger",
                "--data-dir", str(stranger_dir), "--status-port", str(free_port()),
            ],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not (stranger_dir / "identity.pem").exists():
                assert time.monotonic() < deadline and stranger.poll() is None, "no join"
                time.sleep(0.2)
        finally:
            stranger.terminate()
            stranger.wait(10)
        context = ssl.create_default_context(cafile=str(shop_bundle))
        context.check_hostname = False
        context.load_cert_chain(str(stranger_dir / "identity.pem"))
        assert _refused(catalog_v1, context) in ("tls alert", "reset", "closed")

        pids = [int(m[3]) for m in agents.values()]
        ports = [int(p) for m in agents.values() for p in (m[2], m[4], m[5]) if p]
        assert all(_pid_alive(pid) for pid in pids)
        assert demo.stop(signal.SIGINT) == 0
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
    assert "Meshplane demo stopped." in demo.output
    assert not [pid for pid in pids if _pid_alive(pid)], "an agent outlived the demo"
    # Envoys gone too: nothing listens on any ingress or admin port any more.
    assert [p for p in ports if not _port_is_free(p)] == []
    assert _port_is_free(port)
