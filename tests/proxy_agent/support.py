"""Helpers for the agent tests: a scripted 'Envoy' on the relay's socket, a workload
certificate, polling, and HTTP through loopback without proxies."""

from __future__ import annotations

import asyncio
import datetime
import http.client
import socket
import time

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.service.discovery.v3 import discovery_pb2

from proxy_agent.identity import Workload
from proxy_agent.relay import ADS_METHOD


class ScriptedEnvoy:
    """An ADS client on the relay's Unix socket that a test drives request by request."""

    def __init__(self, socket_path) -> None:
        self.channel = grpc.aio.insecure_channel(f"unix:{socket_path}")
        self.outbox: asyncio.Queue = asyncio.Queue()
        rpc = self.channel.stream_stream(
            ADS_METHOD,
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )

        async def requests():
            while True:
                item = await self.outbox.get()
                if item is None:
                    return
                yield item

        self.call = rpc(requests())

    def send(self, type_url: str, names=(), version: str = "", nonce: str = "", error: str = ""):
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=list(names), version_info=version,
            response_nonce=nonce,
        )  # fmt: skip
        if error:
            request.error_detail.code = 3
            request.error_detail.message = error
        self.outbox.put_nowait(request)

    async def receive(self, timeout: float = 10) -> discovery_pb2.DiscoveryResponse:
        return await asyncio.wait_for(self.call.read(), timeout)

    async def close(self) -> None:
        self.outbox.put_nowait(None)
        self.call.cancel()
        await self.channel.close()


async def eventually(predicate, timeout: float = 10, message: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting: {message}")
        await asyncio.sleep(0.02)


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, message=""):
    """Poll `predicate` until truthy; `message` may be a callable (read at the failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out waiting: {text}")
        time.sleep(interval)


def workload(spiffe_id: str, days: float = 1.0, backdate_seconds: float = 60) -> Workload:
    """A self-signed certificate naming `spiffe_id`, with its key (the relay does not
    check the chain; Envoy serves whatever it is given)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshagent-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(seconds=backdate_seconds))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return Workload(pem, key_pem, pem)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """GET on loopback (never through an HTTP proxy from the environment)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def try_get(port: int, path: str = "/") -> tuple[int, dict, bytes] | None:
    try:
        return http_get(port, path)
    except OSError:
        return None
