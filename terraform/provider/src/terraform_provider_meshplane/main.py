"""The plugin executable: go-plugin handshake, AutoMTLS, and the gRPC services Terraform calls.

Terraform starts the plugin with TF_PLUGIN_MAGIC_COOKIE (to refuse being run by hand) and,
for AutoMTLS, its own client certificate in PLUGIN_CLIENT_CERT. We answer with one stdout
line, `1|6|tcp|127.0.0.1:PORT|grpc|<server cert, base64 DER>`, then serve tfplugin6 plus
go-plugin's health check and GRPCController.Shutdown (how Terraform stops us).
"""

from __future__ import annotations

import base64
import datetime
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from concurrent import futures

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from terraform_provider_meshplane._proto import tfplugin6_pb2_grpc as pb_grpc
from terraform_provider_meshplane.provider import Provider
from terraform_provider_meshplane.tlsfront import TLSFront

MAGIC_COOKIE_KEY = "TF_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"
PROTOCOL_VERSION = 6
_HEALTH_SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}


def _server_certificate() -> tuple[bytes, bytes, bytes]:
    """A fresh self-signed P-256 certificate for `localhost`: (key PEM, cert PEM, cert DER).

    go-plugin's client trusts exactly the certificate we print and checks the name
    `localhost`, as its own generated certificates do.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (
        key_pem,
        cert.public_bytes(serialization.Encoding.PEM),
        cert.public_bytes(serialization.Encoding.DER),
    )


def _plugin_services(stop: threading.Event) -> list[grpc.GenericRpcHandler]:
    """go-plugin's own services, by hand: both carry trivial messages."""

    def health(request: bytes, context) -> bytes:
        return _HEALTH_SERVING

    def shutdown(request: bytes, context) -> bytes:
        stop.set()
        return b""

    return [
        grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(health)}
        ),
        grpc.method_handlers_generic_handler(
            "plugin.GRPCController", {"Shutdown": grpc.unary_unary_rpc_method_handler(shutdown)}
        ),
    ]


def _exit_with_parent(stop: threading.Event, parent: int) -> None:
    """Stop when Terraform (`parent`) is gone, so a killed run never leaves a provider behind."""
    while not stop.wait(1.0):
        if os.getppid() != parent:
            stop.set()


def main() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("MESHPLANE_PROVIDER_LOG", "WARNING").upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if os.environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE:
        sys.stderr.write(
            "This is a Terraform plugin: Terraform starts it. Use it through a provider "
            'block with source "meshplane/meshplane".\n'
        )
        sys.exit(1)
    offered = os.environ.get("PLUGIN_PROTOCOL_VERSIONS", str(PROTOCOL_VERSION)).split(",")
    if str(PROTOCOL_VERSION) not in offered:
        sys.stderr.write(
            f"terraform-provider-meshplane speaks plugin protocol {PROTOCOL_VERSION}; this "
            f"Terraform offers {','.join(offered)}. Use Terraform 1.0 or newer.\n"
        )
        sys.exit(1)
    # Read before the handshake: Terraform may be killed as soon as it has our address.
    parent = os.getppid()
    # Terraform forwards Ctrl-C to the process group and then stops us itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    stop = threading.Event()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    pb_grpc.add_ProviderServicer_to_server(Provider(), server)
    server.add_generic_rpc_handlers(_plugin_services(stop))
    client_cert = os.environ.get("PLUGIN_CLIENT_CERT")
    front = None
    if client_cert:
        # AutoMTLS: gRPC listens on a private Unix socket, TLSFront is what Terraform dials.
        private = tempfile.mkdtemp(prefix="terraform-provider-meshplane-")
        backend = os.path.join(private, "grpc.sock")
        server.add_insecure_port(f"unix:{backend}")
        key_pem, cert_pem, cert_der = _server_certificate()
        front = TLSFront(key_pem, cert_pem, client_cert, backend)
        port = front.port
        cert_field = base64.b64encode(cert_der).decode().rstrip("=")
    else:
        port = server.add_insecure_port("127.0.0.1:0")
        cert_field = ""
    server.start()
    if front is not None:
        front.serve_forever()
    sys.stdout.write(f"1|{PROTOCOL_VERSION}|tcp|127.0.0.1:{port}|grpc|{cert_field}\n")
    sys.stdout.flush()
    threading.Thread(target=_exit_with_parent, args=(stop, parent), daemon=True).start()
    stop.wait()
    # Let the Shutdown call's answer go out, then leave at once: Terraform waits for our exit
    # on every command, and tearing down the interpreter's gRPC threads takes most of a second.
    server.stop(grace=0.5).wait()
    if front is not None:
        front.close()
        shutil.rmtree(private, ignore_errors=True)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
