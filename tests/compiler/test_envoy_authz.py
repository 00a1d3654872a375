"""A real Envoy running a compiled STRICT-mTLS callee enforces what the compiler meant:
an allowed caller's certificate gets through to the app, a mesh member that is not an
allowed caller gets 403 with the reason in the access log, and a client without a
certificate does not get a TLS session at all.

The callee's snapshot (explicit mode, on free loopback ports) becomes a static bootstrap
(envoy_static.py) whose SDS secrets are real: a mesh CA and SPIFFE leaves made with the
identity module's PKI helpers.
"""

import contextlib
import datetime
import http.client
import http.server
import json
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tenants.identity import pki
from tests.compiler.envoy_static import static_bootstrap, throwaway_files
from tests.compiler.test_envoy_accepts import envoy_binary
from workers.compiler import MeshContext, ProxyRequest, compile_proxy, names

TRUST_DOMAIN = "111111111111.meshplane.local"
SPIFFE = f"spiffe://{TRUST_DOMAIN}/mesh/shop/virtualNode"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _App(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = b"catalog says hello"
        self.send_response(200)
        self.send_header("Seen-Client-Cert", self.headers.get("x-forwarded-client-cert", ""))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _mesh(protocol: str, catalog_at: int = 0, mode: str = "STRICT") -> MeshContext:
    """catalog (one listener) is called by frontend (backend catalog.local), not by
    stranger; `catalog_at` is the port catalog's proxy listens on, as frontend's EDS."""
    listener = [{"portMapping": {"port": 8080, "protocol": protocol}}]
    endpoints = {("catalog", 8080): [{"address": "127.0.0.1", "port": catalog_at}]}
    return MeshContext.from_specs(
        "shop",
        {"egressFilter": {"type": "DROP_ALL"}},
        virtual_nodes={
            "catalog": {"listeners": listener, "logging": {"accessLog": {"file": {"path": "x"}}}},
            "frontend": {"backends": [{"virtualService": {"virtualServiceName": "catalog.local"}}]},
            "stranger": {"backends": [{"virtualService": {"virtualServiceName": "other.local"}}]},
        },
        virtual_services={
            "catalog.local": {"provider": {"virtualNode": {"virtualNodeName": "catalog"}}}
        },
        endpoints=endpoints if catalog_at else None,
        trust_bundle="(replaced by the test's CA)",
        mtls_mode=mode,
        trust_domain=TRUST_DOMAIN,
    )


class _Pki:
    def __init__(self, directory: Path):
        directory.mkdir(exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        self.key = pki.new_ec_key()
        self.ca = pki.self_signed_ca(
            self.key, pki.x509.Name([]), now, lifetime=datetime.timedelta(days=1)
        )
        self.dir = directory
        self.now = now
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_text(pki.cert_pem(self.ca))

    def leaf(self, name: str) -> tuple[str, str]:
        key = pki.new_ec_key()
        cert = pki.leaf(
            self.ca,
            self.key,
            key.public_key(),
            not_before=self.now - datetime.timedelta(minutes=1),
            not_after=self.now + datetime.timedelta(hours=1),
            uris=(f"{SPIFFE}/{name}",),
        )
        cert_path, key_path = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert_path.write_text(pki.cert_pem(cert))
        key_path.write_text(pki.key_pem(key))
        return str(cert_path), str(key_path)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(4096):
            self.request.sendall(data)


@contextlib.contextmanager
def _envoy(directory: Path, ctx: MeshContext, proxy: ProxyRequest, keys: "_Pki", identity: str):
    """`proxy` compiled from `ctx` and run by a real Envoy holding the certificate of
    `identity` (signed by `keys`' CA) as its SDS `meshplane:identity`."""
    binary = envoy_binary()
    if binary is None:
        pytest.skip("no Envoy binary: run `make envoy` or set MESHPLANE_ENVOY_BIN")
    directory.mkdir(exist_ok=True)
    snapshot = compile_proxy(ctx, proxy).check()
    files = throwaway_files(str(directory))
    boot = static_bootstrap(snapshot, files)
    cert, key = keys.leaf(identity)
    for secret in boot["static_resources"]["secrets"]:
        if secret["name"] == names.IDENTITY_SECRET:
            secret["tls_certificate"] = {
                "certificate_chain": {"filename": cert},
                "private_key": {"filename": key},
            }
        elif secret["name"] == names.MESH_CA_SECRET:
            secret["validation_context"] = {"trusted_ca": {"filename": str(keys.ca_path)}}
    config = directory / "envoy.json"
    config.write_text(json.dumps(boot))
    admin_path = directory / "admin.txt"
    process = subprocess.Popen(
        [binary, "-c", str(config), "--use-dynamic-base-id", "-l", "error"]
        + ["--file-flush-interval-msec", "100"]
        + ["--admin-address-path", str(admin_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        admin = _wait_ready(process, admin_path)
        yield {
            "port": proxy.ingress_port,
            "egress": snapshot.metadata.get("egress_ports", {}),
            "pki": keys,
            "log": Path(files.log),
            "admin": admin,
        }
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _callee(app_port: int) -> ProxyRequest:
    return ProxyRequest(
        "virtualNode",
        "catalog",
        interception="explicit",
        app_port=app_port,
        ingress_port=free_port(),
        egress_port=free_port(),
    )


@contextlib.contextmanager
def _http_app():
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    try:
        yield app.server_address[1]
    finally:
        app.shutdown()
        app.server_close()


@pytest.fixture
def callee(tmp_path):
    with _http_app() as app_port:
        proxy = _callee(app_port)
        with _envoy(tmp_path / "catalog", _mesh("http"), proxy, _Pki(tmp_path), "catalog") as e:
            yield e


@pytest.fixture
def permissive_callee(tmp_path):
    with _http_app() as app_port:
        proxy = _callee(app_port)
        ctx = _mesh("http", mode="PERMISSIVE")
        with _envoy(tmp_path / "catalog", ctx, proxy, _Pki(tmp_path), "catalog") as e:
            yield e


@pytest.fixture
def tcp_callee(tmp_path):
    app = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    app.daemon_threads = True
    threading.Thread(target=app.serve_forever, daemon=True).start()
    try:
        proxy = _callee(app.server_address[1])
        with _envoy(tmp_path / "catalog", _mesh("tcp"), proxy, _Pki(tmp_path), "catalog") as e:
            yield e
    finally:
        app.shutdown()
        app.server_close()


def _wait_ready(process: subprocess.Popen, admin_path: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"Envoy exited: {process.stderr.read().decode()[-2000:]}")
        if admin_path.exists() and admin_path.read_text().strip():
            admin = admin_path.read_text().strip()
            try:
                conn = http.client.HTTPConnection(admin, timeout=2)
                conn.request("GET", "/ready")
                if conn.getresponse().status == 200:
                    return admin
            except OSError:
                pass
        time.sleep(0.1)
    raise AssertionError("Envoy did not become ready in 30 s")


def _get(callee, client_cert: tuple[str, str] | None, headers=None) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(callee["pki"].ca_path))
    context.check_hostname = False  # the server's identity is a SPIFFE URI, checked below
    if client_cert is not None:
        context.load_cert_chain(*client_cert)
    conn = http.client.HTTPSConnection("127.0.0.1", callee["port"], context=context, timeout=10)
    try:
        conn.request("GET", "/items", headers={"Host": "catalog.local", **(headers or {})})
        response = conn.getresponse()
        peer = conn.sock.getpeercert()
        assert ("URI", f"{SPIFFE}/catalog") in peer["subjectAltName"], peer
        callee["seen"] = response.getheader("Seen-Client-Cert")
        return response.status, response.read().decode()
    finally:
        conn.close()


def _stat(callee, name: str) -> int:
    conn = http.client.HTTPConnection(callee["admin"], timeout=5)
    conn.request("GET", f"/stats?filter=^{name}$&format=json")
    stats = json.loads(conn.getresponse().read())["stats"]
    return next((s["value"] for s in stats if s.get("name") == name), -1)


def _log_lines(callee, count: int) -> list[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # Envoy flushes access logs every 100 ms here
        lines = callee["log"].read_text().splitlines() if callee["log"].exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.2)
    raise AssertionError(f"expected {count} access log lines, got {lines}")


def test_allowed_caller_passes_others_get_403_with_the_reason_logged(callee):
    assert _get(callee, callee["pki"].leaf("frontend")) == (200, "catalog says hello")
    status, body = _get(callee, callee["pki"].leaf("stranger"))
    assert (status, body) == (403, "RBAC: access denied")

    allowed, denied = _log_lines(callee, 2)
    assert " 200 " in allowed and f"peer={SPIFFE}/frontend" in allowed, allowed
    assert " 403 " in denied and f"peer={SPIFFE}/stranger" in denied, denied
    assert "responseCodeDetails=rbac_access_denied_matched_policy[none]" in denied, denied
    prefix = "http.ingress_8080.rbac.ingress_8080_rbac"
    assert (_stat(callee, f"{prefix}.allowed"), _stat(callee, f"{prefix}.denied")) == (1, 1)


def test_a_client_without_a_certificate_gets_no_tls_session(callee):
    with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected)):
        _get(callee, None)


def test_a_certificate_from_another_ca_is_refused(callee, tmp_path):
    other = _Pki(tmp_path / "other")
    with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected)):
        _get(callee, other.leaf("frontend"))


def _tls_socket(callee, client_cert: tuple[str, str]) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(callee["pki"].ca_path))
    context.check_hostname = False
    context.load_cert_chain(*client_cert)
    raw = socket.create_connection(("127.0.0.1", callee["port"]), timeout=10)
    return context.wrap_socket(raw)


def test_tcp_allowed_caller_is_proxied_others_are_cut_off_with_the_reason_logged(tcp_callee):
    with _tls_socket(tcp_callee, tcp_callee["pki"].leaf("frontend")) as conn:
        conn.sendall(b"ping")
        assert conn.recv(4) == b"ping"
    with _tls_socket(tcp_callee, tcp_callee["pki"].leaf("stranger")) as conn:
        conn.sendall(b"ping")
        try:
            answer = conn.recv(4)
        except (ssl.SSLError, ConnectionResetError):
            answer = b""
        assert answer == b""  # closed without a byte from the app
    allowed, denied = _log_lines(tcp_callee, 2)
    assert f"peer={SPIFFE}/frontend" in allowed, allowed
    assert f"peer={SPIFFE}/stranger" in denied, denied
    assert "terminationDetails=rbac_access_denied_matched_policy[none]" in denied, denied
    prefix = "ingress_8080_rbac.rbac"
    assert (_stat(tcp_callee, f"{prefix}.allowed"), _stat(tcp_callee, f"{prefix}.denied")) == (
        1,
        1,
    )


@pytest.mark.parametrize("callee_identity, status", [("catalog", 200), ("stranger", 503)])
def test_a_caller_proxy_reaches_the_callee_over_mtls_checking_its_spiffe_id(
    tmp_path, callee_identity, status
):
    """frontend's Envoy → mTLS → catalog's Envoy → app. A callee presenting another mesh
    identity than catalog's is refused by the caller (no request reaches it)."""
    keys = _Pki(tmp_path)
    with _http_app() as app_port:
        proxy = _callee(app_port)
        ctx = _mesh("http", catalog_at=proxy.ingress_port)
        frontend = ProxyRequest(
            "virtualNode",
            "frontend",
            interception="explicit",
            ingress_port=free_port(),
            egress_port=free_port(),
        )
        with (
            _envoy(tmp_path / "catalog", ctx, proxy, keys, callee_identity) as catalog,
            _envoy(tmp_path / "frontend", ctx, frontend, keys, "frontend") as caller,
        ):
            conn = http.client.HTTPConnection(
                "127.0.0.1", caller["egress"]["catalog.local:8080"], timeout=10
            )
            conn.request("GET", "/items", headers={"Host": "catalog.local"})
            response = conn.getresponse()
            body = response.read().decode()
            assert response.status == status, body
            if status == 200:
                assert body == "catalog says hello"
                (line,) = _log_lines(catalog, 1)
                assert f"peer={SPIFFE}/frontend" in line, line
            else:
                assert catalog["log"].exists() is False or catalog["log"].read_text() == ""
                san = _stat(caller, "cluster.upstream/catalog/8080.ssl.fail_verify_san")
                assert san >= 1, san


def test_the_app_learns_the_verified_caller_and_never_a_forged_one(callee):
    forged = {"x-forwarded-client-cert": f"URI={SPIFFE}/admin"}
    assert _get(callee, callee["pki"].leaf("frontend"), forged)[0] == 200
    seen = callee["seen"]
    assert f"URI={SPIFFE}/frontend" in seen and "admin" not in seen, seen


def _plain_get(port: int, headers=None) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/items", headers={"Host": "catalog.local", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode(), response.getheader("Seen-Client-Cert")
    finally:
        conn.close()


def test_strict_refuses_plaintext(callee):
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, OSError)):
        _plain_get(callee["port"])


def test_permissive_takes_plaintext_unauthorized_and_still_authorizes_tls(permissive_callee):
    forged = {"x-forwarded-client-cert": f"URI={SPIFFE}/admin"}
    status, body, seen = _plain_get(permissive_callee["port"], forged)
    assert (status, body, seen) == (200, "catalog says hello", "")  # no identity, none forged
    keys = permissive_callee["pki"]
    assert _get(permissive_callee, keys.leaf("frontend"))[0] == 200
    assert _get(permissive_callee, keys.leaf("stranger")) == (403, "RBAC: access denied")
