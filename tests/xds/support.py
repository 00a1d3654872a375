"""Real peers for the xDS tests: `manage.py serve_xds` as a process, a Celery worker in a
thread (compiles what boto3 writes), tiny gRPC and HTTP backends, a raw ADS client, and
certificates from Join."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import requests

from meshapi.models import Mesh
from tests.support.live import ROOT, live_database_url

GREETER_METHOD = "/test.Greeter/Hello"


class XdsProcess:
    """`manage.py serve_xds` on free ports; `stop()` sends SIGTERM, `kill()` SIGKILL.
    `processes`: `--processes N` (its replica processes' pids in `pids`)."""

    def __init__(
        self,
        *,
        insecure: bool = False,
        replica: str = "r1",
        redis_url: str | None = None,
        port: int = 0,
        join_port: int | None = None,
        grace: float = 1.0,
        poll: float = 30.0,
        processes: int | None = None,
    ) -> None:
        self.replica = replica
        self.log_path = Path(tempfile.gettempdir()) / f"serve-xds-{os.getpid()}-{replica}.log"
        cmd = [
            sys.executable, "manage.py", "serve_xds", "--host", "127.0.0.1",
            "--port", str(port), "--replica", replica, "--grace", str(grace),
            "--poll", str(poll),
        ]  # fmt: skip
        if insecure:
            cmd.append("--insecure")
        if join_port is not None:
            cmd += ["--join-port", str(join_port)]
        if processes is not None:
            cmd += ["--processes", str(processes)]
        env = {
            **os.environ,
            "DATABASE_URL": live_database_url(),
            "MESHPLANE_DB_CONN_MAX_AGE": "0",
            "PYTHONUNBUFFERED": "1",
        }
        if redis_url is not None:
            env["REDIS_URL"] = redis_url
        for name in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env.pop(name, None)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self._log
        )
        self.ads = self.join = ""
        self.pids: list[int] = []  # the replica processes' with --processes
        deadline = time.monotonic() + 60
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(b"serve_xds ready"):
                fields = dict(p.split("=", 1) for p in line.decode().split()[2:])
                self.ads, self.join = fields["ads"], fields.get("join", "")
                self.pids = [int(p) for p in fields.get("pids", "").split(",") if p]
                break
        if not self.ads:
            self.kill()
            raise RuntimeError(f"serve_xds did not start: {line!r}\n{self.log()}")
        # Keep draining stdout so the process never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def log(self) -> str:
        if not self._log.closed:  # still running; after stop() the file is complete
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_compiled(tenant, mesh_name: str, timeout: float = 30) -> Mesh:
    deadline = time.monotonic() + timeout
    while True:
        mesh = Mesh.objects.get(tenant=tenant, name=mesh_name)
        if mesh.compiled_revision == mesh.revision:
            return mesh
        assert time.monotonic() < deadline, (mesh.revision, mesh.compiled_revision)
        time.sleep(0.05)


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, message=""):
    """Poll `predicate` until truthy; `message` (a string or a callable giving one, read
    only on failure) says what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out waiting: {text}")
        time.sleep(interval)


def proxy_detail(persona, mesh: str, kind: str, name: str) -> dict:
    url = f"{persona.base_url}/api/v1/meshes/{mesh}/proxies/{kind}/{name}"
    response = requests.get(url, headers=persona.bearer, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def list_endpoints(persona, mesh: str, node: str) -> list[dict]:
    """A virtual node's endpoints, as the native API lists them."""
    url = f"{persona.base_url}/api/v1/meshes/{mesh}/virtual-nodes/{node}/endpoints/"
    response = requests.get(url, headers=persona.bearer, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def add_static_endpoint(persona, mesh: str, node: str, port: int, address: str = "127.0.0.1"):
    url = f"{persona.base_url}/api/v1/meshes/{mesh}/virtual-nodes/{node}/endpoints/"
    response = requests.post(
        url, json={"port": port, "address": address}, headers=persona.bearer, timeout=30
    )
    assert response.status_code == 201, response.text


# ------------------------------------------------------------------ backends


class GreeterBackend:
    """A gRPC server answering every /test.Greeter/Hello with its own name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))

        def hello(request: bytes, context) -> bytes:
            return name.encode()

        handler = grpc.method_handlers_generic_handler(
            "test.Greeter", {"Hello": grpc.unary_unary_rpc_method_handler(hello)}
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None)


class HttpBackend:
    """An HTTP server answering every GET with its own name."""

    def __init__(self, name: str) -> None:
        label = name.encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Length", str(len(label)))
                self.end_headers()
                self.wfile.write(label)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ identity


@dataclass
class Credentials:
    """A proxy's key and certificate from Join, and the control plane's CA, as files."""

    dir: Path
    key: Path
    chain: Path
    bundle: Path  # the mesh trust bundle
    server_ca: Path  # verifies the control plane
    spiffe_id: str


def join_certificate(
    tenant, mesh: str, kind: str, name: str, join_target: str, workdir: Path
) -> Credentials:
    """A real certificate for the proxy: a join token, a fresh key and CSR, Join over TLS."""
    from tenants.identity import client
    from tenants.identity.services import control_plane_ca_pem, create_join_token

    token = create_join_token(tenant, mesh, kind=kind, node_name=name, actor="test")
    server_ca = control_plane_ca_pem().encode()
    node_id = f"mesh/{mesh}/{kind}/{name}"
    sid = f"spiffe://{tenant.account_id}.meshplane.local/{node_id}"
    key, csr = client.new_key_and_csr(sid)
    answer = client.join(join_target, token.secret, csr, node_id=node_id, root_ca_pem=server_ca)
    workdir.mkdir(parents=True, exist_ok=True)
    files = Credentials(
        workdir,
        workdir / f"{name}.key",
        workdir / f"{name}.pem",
        workdir / f"{name}-bundle.pem",
        workdir / "server-ca.pem",
        answer.get("spiffeId", sid),
    )
    files.key.write_bytes(key)
    files.chain.write_text(answer.get("chain") or answer["certificate"])
    files.bundle.write_text(answer["trustBundle"])
    files.server_ca.write_bytes(server_ca)
    return files


# ------------------------------------------------------------------ grpc xDS client


GRPC_CLIENT = r"""
import json, sys, collections
import grpc, grpc.experimental
creds = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
channel = grpc.secure_channel("xds:///" + sys.argv[1], creds)
hello = channel.unary_unary("/test.Greeter/Hello")
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    command = json.loads(line)
    counts = collections.Counter()
    metadata = tuple(command.get("metadata", {}).items())
    for _ in range(command["n"]):
        try:
            counts[hello(b"", metadata=metadata, timeout=10).decode()] += 1
        except grpc.RpcError as exc:
            counts["error:" + exc.code().name + ":" + (exc.details() or "")[:200]] += 1
    print(json.dumps(counts), flush=True)
"""


class GrpcXdsClient:
    """A process with one `xds:///<target>` channel; `call(n)` makes n RPCs on it."""

    def __init__(self, target: str, bootstrap: dict) -> None:
        drop = {"grpc_proxy", "http_proxy", "https_proxy", "grpc_xds_bootstrap"}
        env = {k: v for k, v in os.environ.items() if k.lower() not in drop}
        env["GRPC_XDS_BOOTSTRAP_CONFIG"] = json.dumps(bootstrap)
        env.setdefault("GRPC_VERBOSITY", "ERROR")
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", GRPC_CLIENT, target],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        assert json.loads(self.proc.stdout.readline())["ready"], self.errors()

    def call(self, n: int, metadata: dict | None = None) -> dict[str, int]:
        self.proc.stdin.write(json.dumps({"n": n, "metadata": metadata or {}}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, self.errors()
        return json.loads(line)

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.terminate()
            self.proc.wait(10)


def grpc_bootstrap(
    ads: str, node_id: str, creds: Credentials | None, metadata: dict | None = None
) -> dict:
    if creds is None:
        channel_creds = [{"type": "insecure"}]
    else:
        channel_creds = [
            {
                "type": "tls",
                "config": {
                    "ca_certificate_file": str(creds.server_ca),
                    "certificate_file": str(creds.chain),
                    "private_key_file": str(creds.key),
                },
            }
        ]
    return {
        "xds_servers": [
            {"server_uri": ads, "channel_creds": channel_creds, "server_features": ["xds_v3"]}
        ],
        "node": {
            "id": node_id,
            "cluster": node_id,
            "metadata": {"consumer": "grpc", "interception": "redirect", **(metadata or {})},
        },
        "certificate_providers": {},
        "server_listener_resource_name_template": "grpc/server?xds.resource.listening_address=%s",
    }


# ------------------------------------------------------------------ a raw ADS client


class RawAdsClient:
    """A state-of-the-world ADS client on a thread that ACKs every response and records
    the versions it was sent per type (what a proxy would have applied)."""

    def __init__(self, ads: str, node_id: str, metadata: dict, subscriptions: dict) -> None:
        import queue

        from envoy.service.discovery.v3 import discovery_pb2
        from google.protobuf import struct_pb2

        self._pb = discovery_pb2
        self.node_id = node_id
        self.subscriptions = subscriptions  # {type_url: [names]}
        self.received: list = []  # (type_url, version_info)
        self.last: dict = {}  # type_url → the last DiscoveryResponse
        self._cond = threading.Condition()
        self._requests: queue.Queue = queue.Queue()
        self._channel = grpc.insecure_channel(ads)
        self._metadata = struct_pb2.Struct()
        self._metadata.update(metadata)
        self._call = None
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _request_stream(self):
        while True:
            item = self._requests.get()
            if item is None:
                return
            yield item

    def _run(self) -> None:
        first = True
        for type_url, names in self.subscriptions.items():
            request = self._pb.DiscoveryRequest(type_url=type_url, resource_names=names)
            if first:
                request.node.id = self.node_id
                request.node.metadata.CopyFrom(self._metadata)
                first = False
            self._requests.put(request)
        rpc = self._channel.stream_stream(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
            request_serializer=self._pb.DiscoveryRequest.SerializeToString,
            response_deserializer=self._pb.DiscoveryResponse.FromString,
        )
        self._call = rpc(self._request_stream())
        try:
            for response in self._call:
                with self._cond:
                    self.received.append((response.type_url, response.version_info))
                    self.last[response.type_url] = response
                    self._cond.notify_all()
                self._requests.put(
                    self._pb.DiscoveryRequest(
                        type_url=response.type_url,
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                        resource_names=self.subscriptions.get(response.type_url, []),
                    )
                )
        except grpc.RpcError as exc:
            self.error = exc

    def versions(self, type_url: str) -> list[str]:
        with self._cond:
            return [v for t, v in self.received if t == type_url]

    def close(self) -> None:
        self._requests.put(None)
        if self._call is not None:
            self._call.cancel()
        self._channel.close()
        self._thread.join(5)


def create_cart(persona) -> None:
    """Mesh `shop` with one virtual node `cart` listening on 8080, compiled."""
    client = persona.appmesh()
    client.create_mesh(meshName="shop")
    client.create_virtual_node(
        meshName="shop",
        virtualNodeName="cart",
        spec={"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
    )
    wait_compiled(persona.tenant, "shop")
