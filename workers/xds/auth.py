"""Who is on a stream: decided once, at stream open, from the TLS peer and the first request.

Secure mode (the default): the ADS port requires a client certificate. The tenant comes
from the certificate (its trust domain carries the account id; the tenant's own mesh CA
must have signed it: `authenticate_peer`), never from the node id, since mesh names repeat
across tenants; and the certificate's SPIFFE id must name the same proxy as `node.id`.
Anything else ends the stream before a single resource is sent: UNAUTHENTICATED when the
certificate proves nothing, PERMISSION_DENIED when it proves someone else.

Insecure mode (`serve_xds --insecure`, loopback only, for local development): there is no
certificate, so the tenant is taken from what the proxy declares: the App Mesh ARN in
`node.metadata["APPMESH_RESOURCE_ARN"]` (its account id) or `node.metadata["meshplane.tenant"]`
(an account id or tenant slug).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import grpc
from asgiref.sync import sync_to_async
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

log = logging.getLogger(__name__)

NODE_ID = re.compile(r"^mesh/(?P<mesh>[^/]+)/(?P<kind>virtualNode|virtualGateway)/(?P<name>[^/]+)$")
ARN = re.compile(
    r"^arn:aws:appmesh:[^:]*:(?P<account>\d{12}):mesh/(?P<mesh>[^/]+)/"
    r"(?P<kind>virtualNode|virtualGateway)/(?P<name>[^/]+)$"
)


class Refused(Exception):
    """The stream is refused at open; `code` is the gRPC status, `message` says why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Identity:
    tenant_id: int
    account_id: str
    mesh: str
    kind: str
    name: str
    peer: str  # the SPIFFE id, or "insecure"

    @property
    def node_id(self) -> str:
        return f"mesh/{self.mesh}/{self.kind}/{self.name}"


def metadata_of(node: base_pb2.Node) -> dict:
    """node.metadata (a protobuf Struct) as a plain dict."""
    return json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}


def parse_node_id(node_id: str) -> tuple[str, str, str]:
    match = NODE_ID.match(node_id or "")
    if match is None:
        raise Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node.id '{node_id}' is not a Meshplane proxy id; use "
            "mesh/<mesh>/virtualNode/<name> or mesh/<mesh>/virtualGateway/<name>.",
        )
    return match["mesh"], match["kind"], match["name"]


def _tenant_by(account_or_slug: str):
    from django.db import close_old_connections
    from django.db.models import Q

    from tenants.models import Tenant

    close_old_connections()
    return Tenant.objects.filter(Q(account_id=account_or_slug) | Q(slug=account_or_slug)).first()


async def authenticate_insecure(node: base_pb2.Node) -> Identity:
    mesh, kind, name = parse_node_id(node.id)
    metadata = metadata_of(node)
    arn = str(metadata.get("APPMESH_RESOURCE_ARN") or "")
    declared = str(metadata.get("meshplane.tenant") or "")
    if arn:
        match = ARN.match(arn)
        if match is None:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"node.metadata.APPMESH_RESOURCE_ARN '{arn}' is not a virtual node or "
                "virtual gateway ARN.",
            )
        if (match["mesh"], match["kind"], match["name"]) != (mesh, kind, name):
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"node.metadata.APPMESH_RESOURCE_ARN names mesh/{match['mesh']}/"
                f"{match['kind']}/{match['name']}, but node.id is '{node.id}'.",
            )
        declared = match["account"]
    if not declared:
        raise Refused(
            grpc.StatusCode.UNAUTHENTICATED,
            "insecure mode takes the tenant from node.metadata.APPMESH_RESOURCE_ARN or "
            "node.metadata['meshplane.tenant']; the node declares neither.",
        )
    tenant = await sync_to_async(_tenant_by, thread_sensitive=False)(declared)
    if tenant is None:
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, f"no tenant '{declared}'.")
    return Identity(tenant.pk, tenant.account_id, mesh, kind, name, "insecure")


def _verify_peer(pem: bytes):
    from django.db import close_old_connections

    from tenants.identity.services import authenticate_peer

    close_old_connections()
    try:
        return authenticate_peer(pem)
    finally:
        close_old_connections()


_CODES = {
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
}


async def authenticate_tls(node: base_pb2.Node, auth_context: dict) -> Identity:
    """The tenant and proxy the client certificate proves, which must be node.id's."""
    from tenants.identity.services import IdentityError

    certs = auth_context.get("x509_pem_cert") or []
    if not certs:
        raise Refused(
            grpc.StatusCode.UNAUTHENTICATED,
            "no client certificate: the ADS port requires the certificate from Join.",
        )
    try:
        peer = await sync_to_async(_verify_peer, thread_sensitive=False)(certs[0])
    except IdentityError as exc:
        raise Refused(_CODES.get(exc.code, grpc.StatusCode.UNAUTHENTICATED), exc.message) from exc
    if peer.node_id != node.id:
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"the client certificate is for {peer.spiffe_id}, but node.id is '{node.id}'.",
        )
    mesh, kind, name = parse_node_id(node.id)
    tenant = peer.tenant
    return Identity(tenant.pk, tenant.account_id, mesh, kind, name, peer.spiffe_id)


# ------------------------------------------------------------------ server credentials


class DynamicRoots:
    """TLS for the ADS port: the control plane's own certificate, client certificates
    required and checked against every mesh CA. gRPC asks `fetch` at each handshake; it
    answers a new configuration only when the trust roots changed (a new mesh or a CA
    rotation), looked up at most once a second."""

    def __init__(self, hosts: list[str], min_interval: float = 1.0) -> None:
        self.hosts = hosts
        self.min_interval = min_interval
        self._version: str | None = None
        self._checked = 0.0

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        from tenants.identity.services import (
            server_credentials_pem,
            trust_roots_pem,
            trust_roots_version,
        )

        self._version = trust_roots_version()
        chain, key, _ca = server_credentials_pem(self.hosts)
        return grpc.ssl_server_certificate_configuration(
            [(key, chain)], root_certificates=trust_roots_pem()
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        from django.db import close_old_connections

        from tenants.identity.services import trust_roots_version

        now = time.monotonic()
        if now - self._checked < self.min_interval:
            return None
        self._checked = now
        try:
            close_old_connections()
            if trust_roots_version() == self._version:
                return None
            return self._configuration()
        except Exception:  # noqa: BLE001 - keep the last good roots
            log.warning("xds: reloading trust roots failed", exc_info=True)
            return None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), self.fetch, require_client_authentication=True
        )


def join_credentials(hosts: list[str]) -> grpc.ServerCredentials:
    """TLS for the Join port: server certificate only (the caller has none yet)."""
    from tenants.identity.services import server_credentials_pem

    chain, key, _ca = server_credentials_pem(hosts)
    return grpc.ssl_server_credentials([(key, chain)])
