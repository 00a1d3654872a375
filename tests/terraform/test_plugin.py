"""The plugin executable as Terraform meets it: magic cookie, handshake line, AutoMTLS."""

from __future__ import annotations

import base64
import contextlib
import datetime
import os
import socket
import ssl
import subprocess
import time

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.terraform.support import PROVIDER_BIN

COOKIE = {
    "TF_PLUGIN_MAGIC_COOKIE": "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"
}


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _client_certificate(curve: ec.EllipticCurve) -> tuple[bytes, bytes]:
    """A self-signed client certificate like go-plugin's AutoMTLS one: (key PEM, cert PEM)."""
    key = ec.generate_private_key(curve)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def plugin(tmp_path):
    """Start the provider as Terraform does; yields (process, handshake fields, client key/cert)."""
    if not PROVIDER_BIN.exists():
        raise AssertionError("the provider is not installed: run `make tfprovider`")
    # go-plugin's client certificate is P-521: the one gRPC's own TLS could not accept.
    key_pem, cert_pem = _client_certificate(ec.SECP521R1())
    env = {
        **os.environ,
        **COOKIE,
        "PLUGIN_PROTOCOL_VERSIONS": "5,6",
        "PLUGIN_CLIENT_CERT": cert_pem.decode(),
    }
    proc = subprocess.Popen([PROVIDER_BIN], env=env, stdout=subprocess.PIPE, text=True)
    try:
        fields = proc.stdout.readline().strip().split("|")
        (tmp_path / "key.pem").write_bytes(key_pem)
        (tmp_path / "cert.pem").write_bytes(cert_pem)
        yield proc, fields, tmp_path
    finally:
        proc.kill()
        proc.wait(10)


def _server_pem(fields: list[str]) -> str:
    der = base64.b64decode(fields[5] + "=" * (-len(fields[5]) % 4))
    return ssl.DER_cert_to_PEM_cert(der)


def _tls_context(fields: list[str], certs=None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=_server_pem(fields))
    ctx.set_alpn_protocols(["h2"])
    if certs is not None:
        ctx.load_cert_chain(certs / "cert.pem", certs / "key.pem")
    return ctx


def _connect(fields: list[str], ctx: ssl.SSLContext) -> bytes:
    """Open TLS to the plugin, send the HTTP/2 preface and read what comes back."""
    host, port = fields[3].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "h2"
            tls.sendall(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            )
            return tls.recv(9)


def test_refuses_to_run_outside_terraform():
    done = subprocess.run(
        [PROVIDER_BIN], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "Terraform starts it" in done.stderr
    assert done.stdout == ""


def test_handshake_line_and_mutual_tls(plugin):
    proc, fields, certs = plugin
    assert fields[:3] == ["1", "6", "tcp"]
    assert fields[3].startswith("127.0.0.1:")
    assert fields[4] == "grpc"

    # With Terraform's certificate: the server speaks HTTP/2 (its SETTINGS frame, type 4).
    frame = _connect(fields, _tls_context(fields, certs))
    assert len(frame) == 9 and frame[3] == 4

    # Without a client certificate: refused.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        frame = _connect(fields, _tls_context(fields))
        if not frame:
            raise ConnectionError("closed")


def test_schema_over_grpc_and_shutdown(plugin, tmp_path):
    proc, fields, certs = plugin
    creds = grpc.ssl_channel_credentials(
        root_certificates=_server_pem(fields).encode(),
        private_key=(certs / "key.pem").read_bytes(),
        certificate_chain=(certs / "cert.pem").read_bytes(),
    )
    with grpc.secure_channel(
        fields[3], creds, options=[("grpc.ssl_target_name_override", "localhost")]
    ) as channel:
        call = channel.unary_unary("/tfplugin6.Provider/GetProviderSchema")
        schema = call(b"", timeout=30)
        assert b"meshplane_gateway_route" in schema and b"weighted_target" in schema
        shutdown = channel.unary_unary("/plugin.GRPCController/Shutdown")
        assert shutdown(b"", timeout=30) == b""
    assert proc.wait(30) == 0


def test_exits_when_terraform_dies_without_stopping_it():
    """A killed Terraform never calls Shutdown: the provider notices and exits by itself."""
    env = {**os.environ, **COOKIE}
    parent = subprocess.Popen(
        ["/bin/sh", "-c", f'"{PROVIDER_BIN}" & echo $!; wait'],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        provider_pid = int(parent.stdout.readline())
        assert parent.stdout.readline().startswith("1|6|tcp|")  # it is up and serving
        os.kill(parent.pid, 9)
        parent.wait(10)
        deadline = time.monotonic() + 30
        while _alive(provider_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(provider_pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, 9)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
