"""The `meshplane.identity.v1.Identity` gRPC service: Join and Renew, for grpc.aio servers.

Messages are JSON bytes (no generated stubs, so an agent needs only grpcio):
request `{"token", "csr", "nodeId"}` (Join) or `{"csr"}` (Renew); response
`{"certificate", "chain", "trustBundle", "spiffeId", "notAfter"}`.

Join is for callers without a certificate, so it is served on a port that does not
require client certificates; Renew takes the caller from its TLS client certificate
(`x509_pem_cert` in the auth context), so it belongs on the mTLS (ADS) port. The handlers
are coroutines for `grpc.aio`; the Django ORM is synchronous, so each call runs in a worker
thread (`sync_to_async(thread_sensitive=False)`: identity calls must not queue behind one
another on a single thread) with stale database connections closed around it.
"""

import json
import logging
from typing import Any

import grpc
from asgiref.sync import sync_to_async
from django.db import close_old_connections

from tenants.identity import services

log = logging.getLogger(__name__)

SERVICE = "meshplane.identity.v1.Identity"
JOIN = f"/{SERVICE}/Join"
RENEW = f"/{SERVICE}/Renew"
MAX_REQUEST_BYTES = 64 * 1024

STATUS = {
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
}


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _request(raw: bytes, fields: tuple[str, ...]) -> dict[str, str]:
    if len(raw) > MAX_REQUEST_BYTES:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "request: larger than 64 KiB.")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "request: not a JSON object.") from None
    if not isinstance(body, dict):
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "request: not a JSON object.")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise _Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{unknown[0]}: unknown field; expected: {', '.join(fields)}.",
        )
    for name in fields:
        if not isinstance(body.get(name, ""), str):
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: must be a string.")
    return body


def _response(issued: services.Issued) -> bytes:
    return json.dumps(
        {
            "certificate": issued.certificate_pem,
            "chain": issued.chain_pem,
            "trustBundle": issued.trust_bundle_pem,
            "spiffeId": issued.spiffe_id,
            "notAfter": issued.not_after.isoformat().replace("+00:00", "Z"),
        }
    ).encode()


def _in_thread(fn, *args: Any) -> Any:
    close_old_connections()
    try:
        return fn(*args)
    finally:
        close_old_connections()


def _join(raw: bytes) -> bytes:
    body = _request(raw, ("token", "csr", "nodeId"))
    if not body.get("csr"):
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "csr: required (a PEM CSR).")
    issued = services.join(body.get("token", ""), body["csr"].encode(), body.get("nodeId", ""))
    return _response(issued)


def _renew(raw: bytes, peer_pem: bytes | None) -> bytes:
    body = _request(raw, ("csr",))
    if not peer_pem:
        raise _Refused(
            grpc.StatusCode.UNAUTHENTICATED,
            "Renew needs the current certificate as the TLS client certificate.",
        )
    peer = services.authenticate_peer(peer_pem)
    if not body.get("csr"):
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "csr: required (a PEM CSR).")
    return _response(services.renew(peer, body["csr"].encode()))


async def _call(context: grpc.aio.ServicerContext, fn, *args: Any) -> bytes:
    try:
        return await sync_to_async(_in_thread, thread_sensitive=False)(fn, *args)
    except services.IdentityError as exc:
        await context.abort(STATUS.get(exc.code, grpc.StatusCode.PERMISSION_DENIED), exc.message)
    except _Refused as exc:
        await context.abort(exc.code, exc.message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _peer_certificate(context: grpc.aio.ServicerContext) -> bytes | None:
    certs = context.auth_context().get("x509_pem_cert") or []
    return certs[0] if certs else None


def identity_handlers(allow_join: bool, allow_renew: bool) -> grpc.GenericRpcHandler:
    """The Identity service's handlers for a `grpc.aio` server; a method not allowed on
    this port is absent (UNIMPLEMENTED). Join on the join port, Renew on the mTLS port."""

    async def join(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await _call(context, _join, request)

    async def renew(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await _call(context, _renew, request, _peer_certificate(context))

    methods: dict[str, grpc.RpcMethodHandler] = {}
    if allow_join:
        methods["Join"] = grpc.unary_unary_rpc_method_handler(join)
    if allow_renew:
        methods["Renew"] = grpc.unary_unary_rpc_method_handler(renew)
    return grpc.method_handlers_generic_handler(SERVICE, methods)
