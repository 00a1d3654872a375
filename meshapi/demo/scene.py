"""The demo scene: three services in the mesh, each with meshagent + Envoy, on loopback.

frontend → catalog.shop.local (router "catalog": 90 % catalog-v1, 10 % catalog-v2, and
`x-canary: v2` always to catalog-v2), automatic mTLS STRICT, and an "intruder" node (a
mesh identity, no backends) that is not an allowed caller of anything.

Explicit interception on one host: every service's listener in the mesh is port 8080
(`NODE_PORT`, as on separate hosts; nothing binds it), and each has its own app port,
Envoy ingress port, egress base port, Envoy admin port and agent status port, all free
loopback ports chosen at start (kept in var/demo/scene/ports.json and reused while free).
Each agent declares its app, ingress and egress ports (`--app-port`, `--ingress-port`,
`--egress-port`: node.metadata); the control plane compiles that proxy's listeners on
them and registers the instance as its node's endpoint for port 8080 at 127.0.0.1:<its
ingress port>, so callers' Envoys reach it there. Nothing is registered by hand.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from django.conf import settings

from meshapi.demo import sample_mesh
from meshapi.demo.sample_mesh import Resource

MESH = sample_mesh.MESH
SERVICE = "catalog.shop.local"
SERVICE_PORT = 8080  # the virtual router's (and so the virtual service's) port
NODE_PORT = 8080  # every node's listener port in the mesh
CANARY_HEADER = "x-canary"
HEADER_ROUTE = "catalog-v2-header"
NODES = ("frontend", "catalog-v1", "catalog-v2", "intruder")
APPS = ("frontend", "catalog-v1", "catalog-v2")  # the intruder has no app of its own

# The one-line launcher every agent is started through: the agent gets SIGTERM when the
# demo's main thread dies, however it dies (Linux), so no agent (and with it no Envoy)
# outlives the demo. prctl survives exec; a demo that died before prctl ran is caught by
# the parent check.
PARENT_GUARD = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class SceneError(Exception):
    """The scene could not be set up; the message says what and where to look."""


# ------------------------------------------------------------------ ports


@dataclass
class Ports:
    app: int  # the service's own HTTP port (the intruder: unused)
    listener: int  # its Envoy ingress listener's port (where callers reach it)
    egress: int  # first loopback egress listener
    admin: int  # Envoy admin
    status: int  # the agent's /ready, /status, /ports


def _free(port: int, host: str = "0.0.0.0") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _unassigned_range() -> range:
    """Ports the kernel never hands out on its own: below the ephemeral range, so another
    process's outgoing connection cannot take a chosen port before its listener binds it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, low) if low > 12000 else range(low, 65536)


def pick_port(taken: set[int]) -> int:
    candidates = _unassigned_range()
    while True:
        port = random.choice(candidates)
        if port not in taken and port != 9901 and _free(port) and _free(port, "127.0.0.1"):
            taken.add(port)
            return port


def choose_ports(path: Path) -> dict[str, Ports]:
    """The ports of the last run when all are still free (the mesh stays unchanged),
    else fresh free ones."""
    try:
        saved = {name: Ports(**p) for name, p in json.loads(path.read_text()).items()}
        every = [p for ports in saved.values() for p in dataclasses.astuple(ports)]
        if set(saved) == set(NODES) and len(set(every)) == len(every) and all(map(_free, every)):
            return saved
    except (OSError, ValueError, TypeError):
        pass
    taken: set[int] = set()
    chosen = {name: Ports(*(pick_port(taken) for _ in range(5))) for name in NODES}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: dataclasses.asdict(v) for k, v in chosen.items()}, indent=1))
    return chosen


# ------------------------------------------------------------------ the mesh

ACCESS_LOG = {
    "file": {
        "path": "/dev/stdout",
        "format": {
            "json": [
                {"key": "time", "value": "%START_TIME%"},
                {"key": "method", "value": "%REQ(:METHOD)%"},
                {"key": "path", "value": "%REQ(:PATH)%"},
                {"key": "status", "value": "%RESPONSE_CODE%"},
            ]
        },
    }
}


def _node_spec(listener: bool, backends: tuple[str, ...] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"logging": {"accessLog": ACCESS_LOG}}
    if listener:
        spec["listeners"] = [{"portMapping": {"port": NODE_PORT, "protocol": "http"}}]
    if backends:
        spec["backends"] = [{"virtualService": {"virtualServiceName": b}} for b in backends]
    return spec


def _targets(weights: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {"virtualNode": node, "weight": weight, "port": NODE_PORT}
        for node, weight in weights.items()
    ]


def split_route_spec(weights: dict[str, int]) -> dict[str, Any]:
    """The canary route: weighted targets, with the sample's retry policy."""
    sample = next(r for r in sample_mesh.RESOURCES if r.names.get("routeName") == sample_mesh.ROUTE)
    spec = json.loads(json.dumps(sample.spec))
    spec["httpRoute"]["action"]["weightedTargets"] = _targets(weights)
    spec["priority"] = 10
    return spec


def resources() -> list[Resource]:
    """The sample mesh as the scene runs it: the same services, router, canary route and
    gateway; nodes found through the endpoints their proxies register instead of DNS; a
    header route to catalog-v2; an `intruder` node; access logs on."""
    names = {"meshName": MESH}
    router = {**names, "virtualRouterName": sample_mesh.ROUTER}
    out = [
        Resource("mesh", names, {"egressFilter": {"type": "DROP_ALL"}}),
        Resource("virtual_node", {**names, "virtualNodeName": "catalog-v1"}, _node_spec(True)),
        Resource("virtual_node", {**names, "virtualNodeName": "catalog-v2"}, _node_spec(True)),
        Resource("virtual_node", {**names, "virtualNodeName": "frontend"},
                 _node_spec(True, (SERVICE,))),
        Resource("virtual_node", {**names, "virtualNodeName": "intruder"}, _node_spec(False)),
        Resource("virtual_router", router,
                 {"listeners": [{"portMapping": {"port": SERVICE_PORT, "protocol": "http"}}]}),
        Resource("route", {**router, "routeName": sample_mesh.ROUTE},
                 split_route_spec(sample_mesh.WEIGHTS)),
        Resource("route", {**router, "routeName": HEADER_ROUTE}, {
            "priority": 0,
            "httpRoute": {
                "match": {
                    "prefix": "/",
                    "headers": [{"name": CANARY_HEADER, "match": {"exact": "v2"}}],
                },
                "action": {"weightedTargets": _targets({"catalog-v2": 1})},
            },
        }),
    ]  # fmt: skip
    # The sample's virtual services and gateway, as they are.
    kinds = ("virtual_service", "virtual_gateway", "gateway_route")
    out += [r for r in sample_mesh.RESOURCES if r.kind in kinds]
    return out


# ------------------------------------------------------------------ the services


def _no_proxy_connection(port: int, timeout: float = 5) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


class App:
    """A tiny HTTP service: catalog-* answer with their name and the caller identity
    header Envoy forwards (if any); frontend asks catalog.shop.local through its Envoy's
    egress listener and answers with what catalog said."""

    def __init__(self, name: str, port: int, egress_port: int | None = None) -> None:
        self.name = name
        self.egress_port = egress_port
        app = self
        local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: with Nagle on, the body waits for Envoy's
            # delayed ACK (~40 ms a request).
            disable_nagle_algorithm = True

            def do_GET(self):  # noqa: N802 - http.server's name
                if self.path == "/healthz":
                    status, body = 200, {"service": app.name}
                elif app.egress_port is None:
                    xfcc = self.headers.get("x-forwarded-client-cert")
                    status, body = 200, {"service": app.name, "xfcc": xfcc}
                else:
                    status, body = app.call_catalog(local, self.headers.get(CANARY_HEADER))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)
        self._thread.start()

    def call_catalog(self, local: threading.local, canary: str | None) -> tuple[int, dict]:
        """One call to catalog.shop.local through Envoy (kept-alive connection per thread)."""
        headers = {"Host": SERVICE}
        if canary:
            headers[CANARY_HEADER] = canary
        for attempt in (1, 2):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = _no_proxy_connection(self.egress_port)
            try:
                conn.request("GET", "/", headers=headers)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                local.conn = None
                if attempt == 2:  # a kept-alive connection Envoy closed: retry once, fresh
                    return 502, {"service": self.name, "error": f"catalog unreachable: {exc}"}
                continue
            if response.status != 200:
                return 502, {
                    "service": self.name,
                    "error": f"catalog answered {response.status}: {body[:200].decode()!r}",
                }
            return 200, {"service": self.name, "catalog": json.loads(body)}
        raise AssertionError("unreachable")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Agent:
    """`meshagent run` for one node, explicit mode, with its ports, as a child process."""

    def __init__(self, name: str, ports: Ports, root: Path, envoy: str) -> None:
        self.name = name
        self.ports = ports
        self.data_dir = root / name
        self.log_path = root / f"{name}.agent.log"
        self.envoy = envoy
        self.proc: subprocess.Popen | None = None

    def start(self, ads: str, join: str, ca_file: Path, token_file: Path) -> None:
        # A fresh identity every run: the database (and its CAs) may be new.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        cmd = [
            sys.executable, "-m", "proxy_agent.cli", "run",
            "--control-plane", ads, "--join-address", join, "--ca-file", str(ca_file),
            "--join-token-file", str(token_file), "--node", f"mesh/{MESH}/virtualNode/{self.name}",
            "--data-dir", str(self.data_dir), "--envoy", self.envoy,
            "--address", "127.0.0.1", "--instance-id", f"scene-{self.name}",
            "--app-port", str(self.ports.app),
            "--ingress-port", str(self.ports.listener), "--egress-port", str(self.ports.egress),
            "--admin-port", str(self.ports.admin), "--status-port", str(self.ports.status),
            "--drain-seconds", "2", "--envoy-log-level", "warning",
        ]  # fmt: skip
        env = {
            k: v
            for k, v in os.environ.items()
            if k.lower() not in {"http_proxy", "https_proxy", "grpc_proxy", "all_proxy"}
        }
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", PARENT_GUARD, str(os.getpid()), *cmd],
                cwd=settings.BASE_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        conn = _no_proxy_connection(self.ports.status, timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            return 0, b""
        finally:
            conn.close()

    def status(self) -> dict:
        code, body = self.get("/status")
        return json.loads(body) if code == 200 else {}

    def log_tail(self, chars: int = 3000) -> str:
        text = ""
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace")[-chars:]
        envoy_log = self.data_dir / "envoy.log"
        with contextlib.suppress(OSError):
            text += "\n--- envoy.log ---\n" + envoy_log.read_text(errors="replace")[-chars:]
        return text

    def check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise SceneError(
                f"meshagent for {self.name} exited with code {self.proc.returncode}; "
                f"its log {self.log_path}:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (the agent drains and stops its Envoy), SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def find_envoy() -> str | None:
    """$MESHPLANE_ENVOY_BIN, the one `make envoy` installs, or `envoy` on PATH."""
    for candidate in (
        os.environ.get("MESHPLANE_ENVOY_BIN"),
        str(Path(settings.BASE_DIR) / ".tools/envoy/bin/envoy"),
        shutil.which("envoy"),
    ):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# ------------------------------------------------------------------ traffic


@dataclass
class Tally:
    """Who answered a run of requests to frontend, and how many failed."""

    by_service: Counter = field(default_factory=Counter)
    failed: int = 0
    errors: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.by_service.values()) + self.failed

    def share(self, service: str) -> float:
        answered = sum(self.by_service.values())
        return 100.0 * self.by_service[service] / answered if answered else 0.0

    def line(self) -> str:
        parts = [
            f"{name} {self.by_service[name]} ({self.share(name):.1f} %)"
            for name in ("catalog-v1", "catalog-v2")
        ]
        return f"{self.total} requests: {', '.join(parts)}; failed {self.failed}"


class LoadClient:
    """Requests to frontend's app, one kept-alive connection (bounded: one at a time)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def get(self, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = _no_proxy_connection(self.port, timeout=10)
            try:
                self.conn.request("GET", "/", headers=headers or {})
                response = self.conn.getresponse()
                return response.status, json.loads(response.read() or b"{}")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    return 0, {"error": str(exc)}
        raise AssertionError("unreachable")

    def run(
        self, count: int | None, tally: Tally, stop: threading.Event | None = None, headers=None
    ) -> Tally:
        sent = 0
        while (count is None or sent < count) and not (stop and stop.is_set()):
            status, body = self.get(headers)
            sent += 1
            catalog = body.get("catalog") or {}
            if status == 200 and catalog.get("service"):
                tally.by_service[catalog["service"]] += 1
            else:
                tally.failed += 1
                tally.errors[body.get("error", f"HTTP {status}")[:160]] += 1
        return tally

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def peer_of_last_request(agent: Agent) -> str | None:
    """The caller's SPIFFE id in the last access-log line of the agent's Envoy (the
    compiler adds `peer` = the verified client certificate's URI SAN under mTLS)."""
    try:
        lines = (agent.data_dir / "envoy.log").read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if '"peer"' not in line:
            continue
        with contextlib.suppress(ValueError):
            peer = json.loads(line[line.index("{") :]).get("peer")
            if peer and peer != "-":
                return peer
    return None


def call_with_identity(
    identity: Path, trust_bundle: Path, port: int, timeout: float = 5
) -> tuple[int, str]:
    """GET / on a mesh ingress presenting a workload certificate (chain + key in one
    file, as meshagent stores it): what another service's certificate gets there."""
    context = ssl.create_default_context(cafile=str(trust_bundle))
    context.check_hostname = False  # mesh certificates carry SPIFFE URIs, no host names
    context.load_cert_chain(str(identity))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    try:
        conn.request("GET", "/", headers={"Host": "catalog-v1"})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace").strip()
    finally:
        conn.close()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, check=None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise SceneError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


# ------------------------------------------------------------------ the scene


class NativeApi:
    """The few native API calls the scene makes, with the demo's access key."""

    def __init__(self, url: str, key_id: str, secret: str) -> None:
        self.base = f"{url}/api/v1"
        self.session = requests.Session()
        self.session.trust_env = False  # loopback: never through a proxy
        self.session.headers["Authorization"] = f"Bearer {key_id}:{secret}"

    def call(self, method: str, path: str, expect: tuple[int, ...], **kwargs) -> Any:
        response = self.session.request(method, self.base + path, timeout=30, **kwargs)
        if response.status_code not in expect:
            raise SceneError(
                f"{method} /api/v1{path} answered {response.status_code}: {response.text[:500]}"
            )
        return response.json() if response.content else None


class Scene:
    """Sets up and drives the scene; `stop()` ends every process it started."""

    def __init__(self, root: Path, say: Callable[[str], None]) -> None:
        self.root = root
        self.say = say
        self.ports = choose_ports(root / "ports.json")
        self.agents: dict[str, Agent] = {}
        self.apps: dict[str, App] = {}
        self.load: LoadClient | None = None

    # -- setup

    def prepare_mesh(self, api: NativeApi) -> None:
        """mTLS STRICT. Endpoints are the agents' to register: static ones an older demo
        added by hand are removed."""
        api.call("PUT", f"/meshes/{MESH}/mtls", (200,), json={"mode": "STRICT"})
        for name in APPS:
            path = f"/meshes/{MESH}/virtual-nodes/{name}/endpoints/"
            for row in self.endpoints(api, name):
                if row["source"] == "static":
                    api.call("DELETE", f"{path}{row['id']}/", (204, 404))

    def endpoints(self, api: NativeApi, name: str) -> list[dict]:
        """The node's endpoints, as GET …/virtual-nodes/<name>/endpoints/ lists them."""
        listing = api.call("GET", f"/meshes/{MESH}/virtual-nodes/{name}/endpoints/", (200,))
        return listing["results"] if isinstance(listing, dict) else listing

    def start(self, api: NativeApi, ads: str, join: str, envoy: str) -> None:
        ca_file = self.root / "cp-ca.pem"
        response = api.session.get(f"{api.base}/identity/ca", timeout=30)
        if response.status_code != 200:
            raise SceneError(f"GET /api/v1/identity/ca answered {response.status_code}")
        ca_file.write_text(response.text)
        for name in APPS:
            egress = self.ports[name].egress if name == "frontend" else None
            self.apps[name] = App(name, self.ports[name].app, egress)
        for name in NODES:
            token = api.call(
                "POST",
                f"/meshes/{MESH}/join-tokens",
                (201,),
                json={"kind": "virtualNode", "name": name, "expiresInSeconds": 600},
            )["token"]
            token_file = self.root / f"{name}.join-token"
            token_file.touch(mode=0o600)
            token_file.write_text(token)
            agent = Agent(name, self.ports[name], self.root, envoy)
            agent.start(ads, join, ca_file, token_file)
            self.agents[name] = agent

    def check_agents(self) -> None:
        for agent in self.agents.values():
            agent.check_running()

    def wait_ready(self, timeout: float = 60) -> None:
        for name in APPS:
            agent = self.agents[name]
            wait_until(
                lambda a=agent: a.get("/ready")[0] == 200,
                timeout,
                f"{name}'s meshagent + Envoy becoming ready (log {agent.log_path})",
                self.check_agents,
            )
        identity = self.agents["intruder"].data_dir / "identity.pem"
        wait_until(identity.exists, timeout, "the intruder's join", self.check_agents)
        self.load = LoadClient(self.apps["frontend"].port)
        # Endpoints, routes and the callees' authorization all in place: both versions answer.
        seen: set[str] = set()

        def both_answer() -> bool:
            status, body = self.load.get()
            if status == 200:
                seen.add(body["catalog"]["service"])
            return {"catalog-v1", "catalog-v2"} <= seen

        wait_until(
            both_answer, timeout, "frontend reaching both catalog versions", self.check_agents
        )

    # -- the story

    def describe(self) -> None:
        for name in NODES:
            p, agent = self.ports[name], self.agents[name]
            pid = agent.proc.pid if agent.proc else "?"
            if name == "intruder":
                what = "no app, no backends: a mesh identity that is nobody's allowed caller"
            elif name == "frontend":
                what = (
                    f"listener {NODE_PORT}: app 127.0.0.1:{p.app}, Envoy ingress :{p.listener}, "
                    f"egress {SERVICE} → 127.0.0.1:{p.egress}"
                )
            else:
                what = f"listener {NODE_PORT}: app 127.0.0.1:{p.app}, Envoy ingress :{p.listener}"
            self.say(
                f"  {name:<11} {what} (meshagent pid {pid}, status :{p.status}, "
                f"Envoy admin :{p.admin})"
            )

    def measure(self, count: int, headers: dict[str, str] | None = None) -> Tally:
        assert self.load is not None
        return self.load.run(count, Tally(), headers=headers)

    def routes_version(self) -> str:
        """The route configuration version frontend's Envoy last accepted (ACKed)."""
        status = self.agents["frontend"].status()
        return ((status.get("envoy") or {}).get("acked") or {}).get("routes", "")

    def shift(self, change: Callable[[], None], settle_timeout: float = 30) -> Tally:
        """Keep the load running while `change` (the UpdateRoute) goes through and reaches
        frontend's Envoy; the tally of every request sent meanwhile."""
        assert self.load is not None
        tally, stop = Tally(), threading.Event()
        before = self.routes_version()
        worker = threading.Thread(
            target=self.load.run, args=(None, tally, stop), name="load", daemon=True
        )
        worker.start()
        try:
            wait_until(lambda: tally.total >= 100, settle_timeout, "load before the change")
            change()
            wait_until(
                lambda: self.routes_version() != before,
                settle_timeout,
                "frontend's Envoy accepting the new route",
                self.check_agents,
            )
            target = tally.total + 100
            wait_until(lambda: tally.total >= target, settle_timeout, "load after the change")
        finally:
            stop.set()
            worker.join(30)
        return tally

    def mtls_peer(self) -> tuple[str | None, str | None]:
        """(the caller catalog-v1's Envoy saw, the XFCC header the app got)."""
        assert self.load is not None
        xfcc = None
        for _ in range(50):  # until one lands on catalog-v1
            status, body = self.load.get()
            if status == 200 and body["catalog"]["service"] == "catalog-v1":
                xfcc = body["catalog"].get("xfcc")
                break
        peer = wait_until(
            lambda: peer_of_last_request(self.agents["catalog-v1"]),
            10,
            "catalog-v1's access log line",
        )
        return peer, xfcc

    def denied_call(self) -> tuple[int, str]:
        intruder = self.agents["intruder"].data_dir
        return call_with_identity(
            intruder / "identity.pem",
            intruder / "trust-bundle.pem",
            self.ports["catalog-v1"].listener,
        )

    def check_alive(self) -> None:
        self.check_agents()

    def stop(self) -> None:
        if self.load is not None:
            self.load.close()
        agents = [a for a in self.agents.values() if a.proc is not None]
        for agent in agents:  # SIGTERM all first: they drain in parallel
            if agent.proc.poll() is None:
                agent.proc.terminate()
        for agent in agents:
            agent.stop()
        for app in self.apps.values():
            app.stop()
