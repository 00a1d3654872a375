"""Mesh identity services: trust domains, per-mesh CAs, join tokens, issuing and checking
proxies' certificates, and the control plane's own TLS credentials.

A proxy proves who it is with a SPIFFE X.509 certificate,
`spiffe://<account id>.meshplane.local/mesh/<mesh>/virtualNode/<name>`: the trust domain
names the tenant (mesh names repeat across tenants), the path the mesh and the node.
Its first certificate is bought with a join token and a CSR (the private key never leaves
the proxy); later ones are renewed with the current certificate.

Every mesh has its own CA (ECDSA P-256, key encrypted at rest), created on first need.
Rotation makes a new CA sign; the old one stays in the mesh's trust bundle until the last
leaf it signed has expired, so no proxy is cut off by a rotation.

Errors a caller can hit are `IdentityError`s with a gRPC-style `code` and one sentence.
"""

import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Max, Sum
from django.utils import timezone

from meshapi.models import Mesh, VirtualGateway, VirtualNode
from meshapi.signals import mesh_changed
from tenants import crypto
from tenants.identity import pki
from tenants.identity.models import (
    DEFAULT_CERTIFICATE_LIFETIME,
    MAX_CERTIFICATE_LIFETIME,
    MIN_CERTIFICATE_LIFETIME,
    ControlPlaneCA,
    JoinToken,
    MeshCA,
    MeshIdentity,
    ProxyKind,
)
from tenants.models import AuditEvent, Tenant
from tenants.services import RuleViolation

log = logging.getLogger(__name__)

TRUST_DOMAIN_SUFFIX = "meshplane.local"
TOKEN_PREFIX = "mpjt_"
TOKEN_ID_LENGTH = 12
_TOKEN_ID_ALPHABET = string.ascii_lowercase + string.digits
KINDS = (ProxyKind.VIRTUAL_NODE.value, ProxyKind.VIRTUAL_GATEWAY.value)
_SPIFFE = re.compile(
    r"^spiffe://(?P<account>[0-9]{12})\."
    + re.escape(TRUST_DOMAIN_SUFFIX)
    + r"/mesh/(?P<mesh>[^/]+)/(?P<kind>virtualNode|virtualGateway)/(?P<name>[^/]+)$"
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_PATTERN = re.compile(r"^[A-Za-z0-9._*-]{1,255}$")
DEFAULT_TOKEN_TTL = timedelta(hours=1)
MAX_TOKEN_TTL = timedelta(days=30)
MAX_TOKEN_USES = 1_000_000


# ---------------------------------------------------------------- the contract


class IdentityError(Exception):
    """A refused identity request. `code` is a gRPC status name ("UNAUTHENTICATED",
    "PERMISSION_DENIED", "INVALID_ARGUMENT"); `message` one sentence naming what was wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _unauthenticated(message: str) -> IdentityError:
    return IdentityError("UNAUTHENTICATED", message)


def _denied(message: str) -> IdentityError:
    return IdentityError("PERMISSION_DENIED", message)


def _invalid(message: str) -> IdentityError:
    return IdentityError("INVALID_ARGUMENT", message)


@dataclass(frozen=True)
class Peer:
    """A proxy proven by its certificate."""

    tenant: Tenant
    mesh: Mesh
    kind: str  # "virtualNode" | "virtualGateway"
    name: str
    spiffe_id: str
    serial: int
    not_after: datetime

    @property
    def node_id(self) -> str:
        return f"mesh/{self.mesh.name}/{self.kind}/{self.name}"


@dataclass(frozen=True)
class Issued:
    certificate_pem: str  # the leaf
    chain_pem: str  # leaf + issuing CA (what a TLS client presents)
    trust_bundle_pem: str  # every CA of the mesh still trusted (current + rotated-out)
    spiffe_id: str
    not_after: datetime


def trust_domain(tenant: Tenant) -> str:
    return f"{tenant.account_id}.{TRUST_DOMAIN_SUFFIX}"


def spiffe_id(tenant: Tenant, mesh_name: str, kind: str, name: str) -> str:
    return f"spiffe://{trust_domain(tenant)}/mesh/{mesh_name}/{kind}/{name}"


def parse_node_id(node_id: str) -> tuple[str, str, str]:
    """`mesh/<mesh>/<kind>/<name>` → (mesh, kind, name); INVALID_ARGUMENT otherwise."""
    parts = node_id.split("/")
    if len(parts) != 4 or parts[0] != "mesh" or parts[2] not in KINDS or not all(parts):
        raise _invalid(
            f"nodeId: '{node_id}' is not of the form mesh/<mesh>/virtualNode/<name> "
            "(or virtualGateway)."
        )
    return parts[1], parts[2], parts[3]


# ---------------------------------------------------------------- mesh CAs


def _mesh_id(mesh: Mesh | int) -> int:
    return mesh if isinstance(mesh, int) else mesh.pk


def _bump(mesh_id: int) -> None:
    """The mesh's trust bundle changed: recompile it after commit (the SDS secret)."""
    Mesh.objects.filter(pk=mesh_id).update(revision=F("revision") + 1)

    def notify() -> None:
        revision = Mesh.objects.filter(pk=mesh_id).values_list("revision", flat=True).first()
        if revision is not None:
            mesh_changed.send(sender=Mesh, mesh_id=mesh_id, revision=revision)

    transaction.on_commit(notify)


def _lock_mesh(mesh_id: int) -> Mesh:
    """The mesh row, locked until commit: CA creation, rotation and issuance serialise here."""
    queryset = Mesh.objects.select_for_update(no_key=True, of=("self",))
    return queryset.select_related("tenant").get(pk=mesh_id)


def _new_ca(mesh: Mesh, generation: int, now: datetime) -> MeshCA:
    key = pki.new_ec_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Meshplane"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, trust_domain(mesh.tenant)),
            x509.NameAttribute(NameOID.COMMON_NAME, f"mesh CA {mesh.uid} #{generation}"),
        ]
    )
    cert = pki.self_signed_ca(key, subject, now)
    return MeshCA.objects.create(
        tenant_id=mesh.tenant_id,
        mesh=mesh,
        generation=generation,
        certificate_pem=pki.cert_pem(cert),
        key_encrypted=crypto.encrypt(pki.key_pem(key)),
        fingerprint_sha256=pki.fingerprint(cert),
        not_after=cert.not_valid_after_utc,
        created_at=now,
    )


def _signing_ca(mesh: Mesh) -> MeshCA:
    """The mesh's current CA, created now if it has none. Call with the mesh locked."""
    ca = MeshCA.objects.filter(mesh=mesh, rotated_at__isnull=True).first()
    if ca is None:
        last = MeshCA.objects.filter(mesh=mesh).aggregate(g=Max("generation"))["g"] or 0
        ca = _new_ca(mesh, last + 1, timezone.now())
        _bump(mesh.pk)
    return ca


def ensure_mesh_ca(mesh: Mesh) -> MeshCA:
    """The mesh's signing CA, created if missing (cheap: one P-256 key)."""
    with transaction.atomic():
        return _signing_ca(_lock_mesh(mesh.pk))


def rotate_mesh_ca(tenant: Tenant, mesh_name: str, *, actor: str) -> MeshCA:
    """A new CA signs from now on; the old one stays trusted while its leaves are valid."""
    with transaction.atomic():
        mesh = _tenant_mesh(tenant, mesh_name, lock=True)
        now = timezone.now()
        old = MeshCA.objects.filter(mesh=mesh, rotated_at__isnull=True).first()
        if old is not None:
            old.rotated_at = now
            old.save(update_fields=["rotated_at"])
        last = MeshCA.objects.filter(mesh=mesh).aggregate(g=Max("generation"))["g"] or 0
        new = _new_ca(mesh, last + 1, now)
        _bump(mesh.pk)
        AuditEvent.objects.create(
            tenant=tenant,
            actor=actor,
            action="RotateMeshCA",
            resource_type="meshCA",
            resource_arn=f"mesh/{mesh.name}",
            before={"generation": old.generation, "fingerprint": old.fingerprint_sha256}
            if old
            else None,
            after={
                "generation": new.generation,
                "fingerprint": new.fingerprint_sha256,
                "previousTrustedUntil": _iso(old.last_leaf_not_after) if old else None,
            },
        )
    return new


def retire_expired_cas(now: datetime | None = None) -> int:
    """Mark rotated-out CAs whose last leaf expired as retired and recompile their meshes,
    so the SDS trust bundle drops them. The bundle itself already leaves them out by time;
    this only makes the change reach proxies. Run periodically; idempotent."""
    now = now or timezone.now()
    retired = 0
    expired = MeshCA.objects.filter(rotated_at__isnull=False, retired_at__isnull=True).exclude(
        last_leaf_not_after__gt=now
    )
    for ca_id, mesh_id in list(expired.values_list("id", "mesh_id")):
        with transaction.atomic():
            if MeshCA.objects.filter(pk=ca_id, retired_at__isnull=True).update(retired_at=now):
                _bump(mesh_id)
                retired += 1
    return retired


def mesh_trust_bundle(mesh: Mesh | int) -> str:
    """PEM of the mesh's trusted CAs, oldest first ("" if it has none yet)."""
    pems = (
        MeshCA.objects.trusted()
        .filter(mesh_id=_mesh_id(mesh))
        .values_list("certificate_pem", flat=True)
    )
    return "".join(pems)


def trust_roots_pem() -> bytes:
    """Every trusted mesh CA of every tenant: what the ADS port's TLS accepts. Who a
    certificate belongs to is then decided by `authenticate_peer`, against its own mesh."""
    pems = MeshCA.objects.trusted().order_by("id").values_list("certificate_pem", flat=True)
    return "".join(pems).encode()


def trust_roots_version() -> str:
    """Changes whenever `trust_roots_pem()` would (one aggregate query): CAs are only ever
    added or dropped, so their count and id sum identify the set."""
    agg = MeshCA.objects.trusted().aggregate(n=Count("id"), s=Sum("id"), m=Max("id"))
    return f"{agg['n']}-{agg['s'] or 0}-{agg['m'] or 0}"


def certificate_lifetime(mesh: Mesh) -> timedelta:
    seconds = (
        MeshIdentity.objects.filter(mesh=mesh)
        .values_list("certificate_lifetime_seconds", flat=True)
        .first()
    )
    return timedelta(seconds=seconds or DEFAULT_CERTIFICATE_LIFETIME)


def set_certificate_lifetime(tenant: Tenant, mesh_name: str, seconds: int, *, actor: str) -> int:
    if not MIN_CERTIFICATE_LIFETIME <= seconds <= MAX_CERTIFICATE_LIFETIME:
        raise RuleViolation(
            "certificateLifetimeSeconds",
            f"must be from {MIN_CERTIFICATE_LIFETIME} to {MAX_CERTIFICATE_LIFETIME} "
            "seconds (30 days).",
        )
    with transaction.atomic():
        mesh = _tenant_mesh(tenant, mesh_name, lock=True)
        before = int(certificate_lifetime(mesh).total_seconds())
        MeshIdentity.objects.update_or_create(
            mesh=mesh, defaults={"tenant": tenant, "certificate_lifetime_seconds": seconds}
        )
        if before != seconds:
            AuditEvent.objects.create(
                tenant=tenant,
                actor=actor,
                action="UpdateMeshIdentity",
                resource_type="meshIdentity",
                resource_arn=f"mesh/{mesh.name}",
                before={"certificateLifetimeSeconds": before},
                after={"certificateLifetimeSeconds": seconds},
            )
    return seconds


class NotFound(LookupError):
    """The named mesh or token does not exist for this tenant (answer 404)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _tenant_mesh(tenant: Tenant, mesh_name: str, *, lock: bool = False) -> Mesh:
    queryset = Mesh.objects.filter(tenant=tenant, name=mesh_name).select_related("tenant")
    if lock:
        queryset = queryset.select_for_update(no_key=True, of=("self",))
    mesh = queryset.first()
    if mesh is None:
        raise NotFound(f"Mesh '{mesh_name}' not found.")
    return mesh


def mesh_cas(mesh: Mesh) -> list[MeshCA]:
    return list(MeshCA.objects.filter(mesh=mesh).order_by("generation"))


# ---------------------------------------------------------------- join tokens


@dataclass(frozen=True)
class NewJoinToken:
    token: JoinToken
    secret: str  # the whole token, shown once


def _token_key() -> bytes:
    return hashlib.sha256(b"meshplane-join-token:" + settings.SECRET_KEY.encode()).digest()


def _digest(token: str) -> str:
    return hmac.new(_token_key(), token.encode(), hashlib.sha256).hexdigest()


def _token_arn(mesh_name: str, token_id: str) -> str:
    return f"mesh/{mesh_name}/joinToken/{token_id}"


def create_join_token(
    tenant: Tenant,
    mesh_name: str,
    *,
    kind: str,
    node_name: str = "",
    name_pattern: str = "",
    expires_in: timedelta = DEFAULT_TOKEN_TTL,
    max_uses: int = 1,
    description: str = "",
    actor: str,
) -> NewJoinToken:
    """A join token for one node name, or for every name matching `name_pattern` (`*`
    stands for any run of characters, for scaling groups). The token is returned once."""
    if kind not in KINDS:
        raise RuleViolation("kind", f"must be one of: {', '.join(KINDS)}.")
    if bool(node_name) == bool(name_pattern):
        raise RuleViolation("name", "give exactly one of name and namePattern.")
    if node_name and not _NAME.match(node_name):
        raise RuleViolation(
            "name", f"'{node_name}' is not a {kind} name (letters, digits, '.', '_', '-')."
        )
    if name_pattern and (not _PATTERN.match(name_pattern) or "*" not in name_pattern):
        raise RuleViolation(
            "namePattern",
            f"'{name_pattern}' must be a name with at least one '*', e.g. 'cart-*'.",
        )
    if not timedelta(seconds=1) <= expires_in <= MAX_TOKEN_TTL:
        raise RuleViolation("expiresInSeconds", "must be from 1 second to 30 days.")
    if not 1 <= max_uses <= MAX_TOKEN_USES:
        raise RuleViolation("maxUses", f"must be from 1 to {MAX_TOKEN_USES}.")
    token_id = "".join(secrets.choice(_TOKEN_ID_ALPHABET) for _ in range(TOKEN_ID_LENGTH))
    secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    now = timezone.now()
    with transaction.atomic():
        mesh = _tenant_mesh(tenant, mesh_name)
        token = JoinToken.objects.create(
            tenant=tenant,
            mesh=mesh,
            token_id=token_id,
            digest=_digest(secret),
            kind=kind,
            node_name=node_name,
            name_pattern=name_pattern,
            description=description,
            expires_at=now + expires_in,
            max_uses=max_uses,
            created_by=actor,
            created_at=now,
        )
        AuditEvent.objects.create(
            tenant=tenant,
            actor=actor,
            action="CreateJoinToken",
            resource_type="joinToken",
            resource_arn=_token_arn(mesh.name, token_id),
            after={
                "tokenId": token_id,
                "kind": kind,
                "name": node_name,
                "namePattern": name_pattern,
                "expiresAt": _iso(token.expires_at),
                "maxUses": max_uses,
            },
        )
    return NewJoinToken(token, secret)


def revoke_join_token(tenant: Tenant, mesh_name: str, token_id: str, *, actor: str) -> JoinToken:
    with transaction.atomic():
        token = (
            JoinToken.objects.select_for_update()
            .filter(tenant=tenant, mesh__name=mesh_name, token_id=token_id)
            .select_related("mesh")
            .first()
        )
        if token is None:
            raise NotFound(f"Join token '{token_id}' not found in mesh '{mesh_name}'.")
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            AuditEvent.objects.create(
                tenant=tenant,
                actor=actor,
                action="RevokeJoinToken",
                resource_type="joinToken",
                resource_arn=_token_arn(mesh_name, token_id),
                before={"revoked": False, "uses": token.uses},
                after={"revoked": True, "uses": token.uses},
            )
    return token


def _find_token(token: str) -> JoinToken:
    """The token's row if the whole token matches its digest; UNAUTHENTICATED otherwise."""
    unknown = _unauthenticated("token: unknown join token.")
    if not token.startswith(TOKEN_PREFIX):
        raise _unauthenticated(f"token: not a join token (they start with '{TOKEN_PREFIX}').")
    token_id = token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + TOKEN_ID_LENGTH]
    row = JoinToken.objects.filter(token_id=token_id).select_related("tenant", "mesh").first()
    if row is None or not hmac.compare_digest(row.digest, _digest(token)):
        raise unknown
    return row


def _pattern_matches(pattern: str, name: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, name) is not None


def _token_target(row: JoinToken, node_id: str) -> tuple[str, str]:
    """(kind, name) the token lets this caller join as."""
    mesh_name = row.mesh.name
    if not node_id:
        if row.name_pattern:
            raise _invalid(
                f"nodeId: this token is for names matching '{row.name_pattern}'; give the "
                f"node id, e.g. mesh/{mesh_name}/{row.kind}/<name>."
            )
        return row.kind, row.node_name
    asked_mesh, kind, name = parse_node_id(node_id)
    bound = f"mesh/{mesh_name}/{row.kind}/{row.node_name or row.name_pattern}"
    if asked_mesh != mesh_name or kind != row.kind:
        raise _denied(f"nodeId: this token is for {bound}, not {node_id}.")
    if row.name_pattern and not _pattern_matches(row.name_pattern, name):
        raise _denied(f"nodeId: '{name}' does not match this token's pattern {bound}.")
    if row.node_name and name != row.node_name:
        raise _denied(f"nodeId: this token is for {bound}, not {node_id}.")
    return kind, name


def _check_token_usable(row: JoinToken, now: datetime) -> None:
    state = row.state(now)
    if state == "revoked":
        raise _unauthenticated(f"token: join token {row.token_id} was revoked.")
    if state == "expired":
        raise _unauthenticated(
            f"token: join token {row.token_id} expired at {_iso(row.expires_at)}."
        )
    if state == "usedUp":
        raise _unauthenticated(
            f"token: join token {row.token_id} has been used its {row.max_uses} time(s)."
        )


# ---------------------------------------------------------------- issuing


def _node_exists(mesh: Mesh, kind: str, name: str) -> bool:
    model = VirtualNode if kind == ProxyKind.VIRTUAL_NODE else VirtualGateway
    return model.objects.filter(mesh=mesh, name=name).exists()


def _checked_csr(csr_pem: bytes, wanted: str) -> x509.CertificateSigningRequest:
    try:
        csr = pki.load_csr(csr_pem)
    except pki.CSRError as exc:
        raise _invalid(str(exc)) from exc
    uris = pki.csr_uris(csr)
    if uris and uris != [wanted]:
        raise _denied(f"csr: asks for {', '.join(uris)}, but this caller may only be {wanted}.")
    return csr


def _issue(mesh: Mesh, kind: str, name: str, csr: x509.CertificateSigningRequest) -> Issued:
    """Sign the CSR's key for (mesh, kind, name). Call inside a transaction with the mesh
    locked: it records the leaf's expiry on its CA (how long a rotated-out CA stays)."""
    ca = _signing_ca(mesh)
    ca_cert = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    now = timezone.now()
    not_after = min(now + certificate_lifetime(mesh), ca.not_after)
    sid = spiffe_id(mesh.tenant, mesh.name, kind, name)
    leaf = pki.leaf(
        ca_cert,
        pki.load_key(crypto.decrypt(ca.key_encrypted)),
        csr.public_key(),
        not_before=now - pki.BACKDATE,
        not_after=not_after,
        uris=(sid,),
        common_name=name,
    )
    not_after = leaf.not_valid_after_utc
    if ca.last_leaf_not_after is None or ca.last_leaf_not_after < not_after:
        MeshCA.objects.filter(pk=ca.pk).update(last_leaf_not_after=not_after)
    leaf_pem = pki.cert_pem(leaf)
    return Issued(
        certificate_pem=leaf_pem,
        chain_pem=leaf_pem + ca.certificate_pem,
        trust_bundle_pem=mesh_trust_bundle(mesh),
        spiffe_id=sid,
        not_after=not_after,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _audit_refusal(
    tenant: Tenant, action: str, arn: str, exc: IdentityError, *, actor: str, **details
) -> None:
    """Refusals are audited after the refused work rolled back, so they always stay."""
    AuditEvent.objects.create(
        tenant=tenant,
        actor=actor,
        action=action,
        resource_type="certificate",
        resource_arn=arn,
        after={"code": exc.code, "message": exc.message, **details},
    )


def join(token: str, csr_pem: bytes, node_id: str = "") -> Issued:
    """Trade a join token and a CSR for a certificate. `node_id` is required when the
    token has a name pattern, and must be the token's node otherwise. The CSR's URI SAN,
    if any, must be the SPIFFE id being issued. A refusal uses up nothing."""
    row = None
    try:
        row = _find_token(token or "")
        with transaction.atomic():
            try:
                mesh = _lock_mesh(row.mesh_id)
            except Mesh.DoesNotExist:  # deleted since: its tokens went with it
                row = None
                raise _unauthenticated("token: unknown join token.") from None
            row = (
                JoinToken.objects.select_for_update(of=("self",))
                .select_related("tenant", "mesh")
                .get(pk=row.pk)
            )
            now = timezone.now()
            _check_token_usable(row, now)
            kind, name = _token_target(row, node_id)
            sid = spiffe_id(mesh.tenant, mesh.name, kind, name)
            csr = _checked_csr(csr_pem, sid)
            if not _node_exists(mesh, kind, name):
                raise _denied(f"nodeId: {kind} '{name}' does not exist in mesh '{mesh.name}'.")
            JoinToken.objects.filter(pk=row.pk).update(uses=F("uses") + 1, last_used_at=now)
            issued = _issue(mesh, kind, name, csr)
            AuditEvent.objects.create(
                tenant=mesh.tenant,
                actor=f"joinToken {row.token_id}",
                action="JoinMesh",
                resource_type="certificate",
                resource_arn=sid,
                after={"tokenId": row.token_id, "notAfter": _iso(issued.not_after)},
            )
            return issued
    except IdentityError as exc:
        if row is not None:
            _audit_refusal(
                row.tenant,
                "JoinMeshRefused",
                _token_arn(row.mesh.name, row.token_id),
                exc,
                actor=f"joinToken {row.token_id}",
                nodeId=node_id,
            )
        else:
            log.info("join refused: %s", exc.message)
        raise


def renew(peer: Peer, csr_pem: bytes) -> Issued:
    """A fresh certificate for the same identity as `peer` (authenticated by its current
    certificate); the CSR may carry a new key, never another name."""
    try:
        with transaction.atomic():
            try:
                mesh = _lock_mesh(peer.mesh.pk)
            except Mesh.DoesNotExist:
                raise _denied(f"mesh '{peer.mesh.name}' no longer exists.") from None
            csr = _checked_csr(csr_pem, peer.spiffe_id)
            if not _node_exists(mesh, peer.kind, peer.name):
                raise _denied(f"{peer.kind} '{peer.name}' no longer exists in mesh '{mesh.name}'.")
            issued = _issue(mesh, peer.kind, peer.name, csr)
            AuditEvent.objects.create(
                tenant=peer.tenant,
                actor=peer.spiffe_id,
                action="RenewCertificate",
                resource_type="certificate",
                resource_arn=peer.spiffe_id,
                before={"serial": str(peer.serial), "notAfter": _iso(peer.not_after)},
                after={"notAfter": _iso(issued.not_after)},
            )
            return issued
    except IdentityError as exc:
        if Tenant.objects.filter(pk=peer.tenant.pk).exists():
            _audit_refusal(
                peer.tenant, "RenewCertificateRefused", peer.spiffe_id, exc, actor=peer.spiffe_id
            )
        raise


def authenticate_peer(cert_chain_pem: bytes) -> Peer:
    """Who holds this certificate (the first in the chain): its SPIFFE id names the
    tenant (trust domain), mesh and node, and the mesh's own CAs must have signed it —
    never another tenant's or mesh's, whatever roots the TLS layer accepted."""
    data = cert_chain_pem.encode() if isinstance(cert_chain_pem, str) else bytes(cert_chain_pem)
    try:
        leaf = x509.load_pem_x509_certificates(data)[0]
    except (ValueError, IndexError):
        raise _unauthenticated("certificate: not a PEM X.509 certificate.") from None
    uris = pki.cert_uris(leaf)
    if len(uris) != 1:
        raise _unauthenticated(
            f"certificate: carries {len(uris)} URI SANs; a Meshplane identity has exactly one."
        )
    sid = uris[0]
    match = _SPIFFE.match(sid)
    if match is None:
        raise _unauthenticated(
            f"certificate: '{sid}' is not a Meshplane SPIFFE id "
            f"(spiffe://<account>.{TRUST_DOMAIN_SUFFIX}/mesh/<mesh>/virtualNode/<name>)."
        )
    tenant = Tenant.objects.filter(account_id=match["account"]).first()
    if tenant is None:
        raise _unauthenticated(f"certificate: trust domain of '{sid}' is not known here.")
    try:
        return _authenticate(tenant, leaf, sid, match)
    except IdentityError as exc:
        _audit_refusal(
            tenant, "AuthenticateRefused", sid, exc, actor=sid, serial=str(leaf.serial_number)
        )
        raise


def _authenticate(tenant: Tenant, leaf: x509.Certificate, sid: str, match) -> Peer:
    mesh_name, kind, name = match["mesh"], match["kind"], match["name"]
    mesh = Mesh.objects.filter(tenant=tenant, name=mesh_name).select_related("tenant").first()
    if mesh is None:
        raise _denied(f"certificate: mesh '{mesh_name}' of {sid} no longer exists.")
    now = timezone.now()
    signer = None
    # Every CA the mesh ever had, so an old certificate is told it expired rather than
    # that a stranger signed it; only a CA still trusted admits it (checked below).
    for ca in MeshCA.objects.filter(mesh=mesh).order_by("-generation"):
        if pki.signed_by(leaf, x509.load_pem_x509_certificate(ca.certificate_pem.encode())):
            signer = ca
            break
    if signer is None:
        raise _unauthenticated(f"certificate: {sid} was not signed by a CA of mesh '{mesh_name}'.")
    if leaf.not_valid_before_utc > now:
        raise _unauthenticated(
            f"certificate: {sid} is not valid before {_iso(leaf.not_valid_before_utc)}."
        )
    if leaf.not_valid_after_utc <= now:
        raise _unauthenticated(
            f"certificate: {sid} expired at {_iso(leaf.not_valid_after_utc)}; join again."
        )
    if not MeshCA.objects.trusted(now).filter(pk=signer.pk).exists():
        raise _unauthenticated(
            f"certificate: {sid} was signed by CA generation {signer.generation} of mesh "
            f"'{mesh_name}', which is no longer trusted; join again."
        )
    if not _node_exists(mesh, kind, name):
        raise _denied(f"certificate: {kind} '{name}' no longer exists in mesh '{mesh_name}'.")
    return Peer(
        tenant=tenant,
        mesh=mesh,
        kind=kind,
        name=name,
        spiffe_id=sid,
        serial=leaf.serial_number,
        not_after=leaf.not_valid_after_utc,
    )


# ---------------------------------------------------------------- control plane TLS


def _control_plane_ca() -> tuple[x509.Certificate, object]:
    row = ControlPlaneCA.objects.filter(name="default").first()
    if row is None:
        key = pki.new_ec_key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Meshplane"),
                x509.NameAttribute(NameOID.COMMON_NAME, "Meshplane control plane CA"),
            ]
        )
        cert = pki.self_signed_ca(key, subject, timezone.now())
        try:
            with transaction.atomic():
                row = ControlPlaneCA.objects.create(
                    name="default",
                    certificate_pem=pki.cert_pem(cert),
                    key_encrypted=crypto.encrypt(pki.key_pem(key)),
                    not_after=cert.not_valid_after_utc,
                )
        except IntegrityError:  # another process created it first: use theirs
            row = ControlPlaneCA.objects.get(name="default")
    cert = x509.load_pem_x509_certificate(row.certificate_pem.encode())
    return cert, pki.load_key(crypto.decrypt(row.key_encrypted))


def control_plane_ca_pem() -> str:
    """The certificate agents trust for the control plane's ADS and join ports."""
    override = os.environ.get("MESHPLANE_XDS_TLS_CA", "")
    if override:
        with open(override) as f:
            return f.read()
    cert, _ = _control_plane_ca()
    return pki.cert_pem(cert)


SERVER_CERT_LIFETIME = timedelta(days=365)


def server_credentials_pem(hosts: list[str]) -> tuple[bytes, bytes, bytes]:
    """(certificate chain, private key, CA certificate) for the control plane's own TLS.
    The certificate names `hosts` plus localhost, 127.0.0.1 and ::1. Files named by
    MESHPLANE_XDS_TLS_CERT / MESHPLANE_XDS_TLS_KEY (and MESHPLANE_XDS_TLS_CA) win."""
    cert_file = os.environ.get("MESHPLANE_XDS_TLS_CERT", "")
    key_file = os.environ.get("MESHPLANE_XDS_TLS_KEY", "")
    if cert_file and key_file:
        with open(cert_file, "rb") as f:
            chain = f.read()
        with open(key_file, "rb") as f:
            key = f.read()
        ca = control_plane_ca_pem().encode() if os.environ.get("MESHPLANE_XDS_TLS_CA") else b""
        if not ca:  # the chain's last certificate is the closest to a root we have
            certs = x509.load_pem_x509_certificates(chain)
            ca = pki.cert_pem(certs[-1]).encode()
        return chain, key, ca
    ca_cert, ca_key = _control_plane_ca()
    dns: list[str] = ["localhost"]
    ips: list = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    for host in hosts:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if host and host not in dns:
                dns.append(host)
        else:
            if ip not in ips:
                ips.append(ip)
    key = pki.new_ec_key()
    now = timezone.now()
    cert = pki.leaf(
        ca_cert,
        ca_key,
        key.public_key(),
        not_before=now - pki.BACKDATE,
        not_after=min(now + SERVER_CERT_LIFETIME, ca_cert.not_valid_after_utc),
        dns=tuple(dns),
        ips=tuple(ips),
        common_name=dns[-1] if len(dns) > 1 else "localhost",
    )
    ca_pem = pki.cert_pem(ca_cert).encode()
    return pki.cert_pem(cert).encode() + ca_pem, pki.key_pem(key).encode(), ca_pem
