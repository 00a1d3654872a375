"""Who is calling: AWS SigV4 on the App Mesh API, bearer access keys on the native API.

SigV4 is verified by recomputing the signature with botocore's own signer over the
headers the client says it signed, then comparing in constant time.
"""

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import quote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import authentication, exceptions

from meshapi.appmesh.errors import (
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)
from tenants import crypto, keycache
from tenants.models import AccessKey

SERVICE = "appmesh"
CLOCK_SKEW = timedelta(minutes=15)
LAST_USED_RESOLUTION = timedelta(seconds=60)
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<headers>[^,\s]+),"
    r"\s*Signature=(?P<sig>[0-9a-f]{64})\s*$"
)


@lru_cache(maxsize=1024)
def _secret(encrypted: str) -> str:
    return crypto.decrypt(encrypted)


def load_key(key_id: str) -> AccessKey | None:
    """A usable (not revoked, not expired) key with its tenant and member, or None."""
    key = keycache.get(key_id)
    if key is None:
        key = (
            AccessKey.objects.usable()
            .select_related("tenant", "membership__user")
            .filter(key_id=key_id)
            .first()
        )
        if key is None:
            return None
        keycache.put(key_id, key)
    if key.expires_at is not None and key.expires_at <= timezone.now():
        return None
    return key


def touch(key: AccessKey) -> None:
    """Record use, at most once a minute per key so reads stay reads."""
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        AccessKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now


class _Verifier(SigV4Auth):
    """botocore's signer, told exactly which headers the client signed."""

    def __init__(self, credentials: Credentials, region: str, signed: list[str]) -> None:
        super().__init__(credentials, SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        out = HTTPHeaders()
        for name in self._signed:
            out[name] = request.headers.get(name, "")
        return out

    def payload(self, request: AWSRequest) -> str:
        return hashlib.sha256(request.body or b"").hexdigest()


def _meta_header(request: HttpRequest, name: str) -> str | None:
    if name == "content-type":
        return request.META.get("CONTENT_TYPE")
    if name == "content-length":
        return request.META.get("CONTENT_LENGTH")
    return request.META.get("HTTP_" + name.upper().replace("-", "_"))


@dataclass(frozen=True)
class SigV4Result:
    key: AccessKey
    region: str


def verify_sigv4(request: HttpRequest, body: bytes) -> SigV4Result:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        raise MissingAuthenticationToken("Missing Authentication Token")
    match = _AUTH_RE.match(header)
    if not match:
        raise IncompleteSignature(
            "Authorization header is not a valid AWS4-HMAC-SHA256 signature "
            "(Credential=…, SignedHeaders=…, Signature=…)."
        )
    cred = match["cred"].split("/")
    if len(cred) != 5 or cred[4] != "aws4_request":
        raise IncompleteSignature(
            "Credential: expected <key id>/<date>/<region>/appmesh/aws4_request."
        )
    key_id, date, region, service, _ = cred
    if service != SERVICE:
        raise InvalidSignature(f"Credential should be scoped to correct service: '{SERVICE}'.")
    signed = match["headers"].split(";")
    if "host" not in signed:
        raise IncompleteSignature("SignedHeaders: the host header must be signed.")
    amz_date = request.META.get("HTTP_X_AMZ_DATE", "")
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise IncompleteSignature(
            "X-Amz-Date: missing or not in the form 20260101T000000Z."
        ) from exc
    if not amz_date.startswith(date):
        raise InvalidSignature("Credential date does not match X-Amz-Date.")
    now = datetime.now(UTC)
    if abs(now - when) > CLOCK_SKEW:
        raise InvalidSignature(
            f"Signature expired: {amz_date} is outside the 15 minute window around "
            f"{now:%Y%m%dT%H%M%SZ}; check the client's clock."
        )
    key = load_key(key_id)
    if key is None:
        raise UnrecognizedClient("The security token included in the request is invalid.")

    claimed = request.META.get("HTTP_X_AMZ_CONTENT_SHA256")
    if claimed is not None and claimed != hashlib.sha256(body).hexdigest():
        raise InvalidSignature("X-Amz-Content-SHA256 does not match the request body.")

    headers = HTTPHeaders()
    for name in signed:
        value = _meta_header(request, name)
        if value is not None:
            headers[name] = value
    query = request.META.get("QUERY_STRING", "")
    url = "http://" + request.get_host() + quote(request.path_info, safe="/~")
    if query:
        url += "?" + query
    aws_request = AWSRequest(method=request.method, url=url, headers=headers, data=body)
    aws_request.context["timestamp"] = amz_date
    verifier = _Verifier(Credentials(key_id, _secret(key.secret_encrypted)), region, signed)
    canonical = verifier.canonical_request(aws_request)
    expected = verifier.signature(verifier.string_to_sign(aws_request, canonical), aws_request)
    if not hmac.compare_digest(expected, match["sig"]):
        raise InvalidSignature(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    touch(key)
    return SigV4Result(key, region)


class BearerKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key id>:<secret>` on the native API."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header.startswith(self.keyword + " "):
            return None
        token = header[len(self.keyword) + 1 :].strip()
        key_id, sep, secret = token.partition(":")
        if not sep:
            raise exceptions.AuthenticationFailed(
                "Bearer token must be '<access key id>:<secret>'."
            )
        key = load_key(key_id)
        if key is None or not hmac.compare_digest(
            _secret(key.secret_encrypted).encode(), secret.encode()
        ):
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked access key.")
        touch(key)
        return (key.membership.user if key.membership_id else None, key)

    def authenticate_header(self, request) -> str:
        return self.keyword
