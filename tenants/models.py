"""Tenants, members, access keys, quotas and the audit log."""

import secrets
import string

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants import crypto

KEY_ID_ALPHABET = string.ascii_uppercase + string.digits


def new_account_id() -> str:
    return str(secrets.randbelow(9 * 10**11) + 10**11)


class Tenant(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=63, unique=True)
    account_id = models.CharField(max_length=12, unique=True, default=new_account_id)
    default_region = models.CharField(max_length=32, default="us-east-1")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.slug


class Role(models.TextChoices):
    ADMIN = "admin"
    EDITOR = "editor"
    VIEWER = "viewer"


class Membership(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="uniq_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class AccessKeyQuerySet(models.QuerySet):
    def usable(self) -> "AccessKeyQuerySet":
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class AccessKey(models.Model):
    """A key pair for SigV4 (App Mesh API) and bearer auth (native API).

    The secret is stored encrypted, not hashed: SigV4 verification must recompute the
    signature with it. It is returned once, at creation.
    """

    key_id = models.CharField(max_length=20, unique=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="access_keys")
    membership = models.ForeignKey(
        Membership, on_delete=models.CASCADE, related_name="access_keys", null=True, blank=True
    )
    description = models.CharField(max_length=200, blank=True, default="")
    secret_encrypted = models.TextField()
    read_only = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AccessKeyQuerySet.as_manager()

    def __str__(self) -> str:
        return self.key_id

    @staticmethod
    def generate_key_id() -> str:
        return "AKMP" + "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(16))

    @staticmethod
    def generate_secret() -> str:
        return secrets.token_urlsafe(30)[:40]

    def set_secret(self, secret: str) -> None:
        self.secret_encrypted = crypto.encrypt(secret)

    def secret(self) -> str:
        return crypto.decrypt(self.secret_encrypted)

    @property
    def role(self) -> str:
        return self.membership.role if self.membership_id else Role.ADMIN

    @property
    def can_write(self) -> bool:
        return not self.read_only and self.role != Role.VIEWER

    @property
    def is_admin(self) -> bool:
        return not self.read_only and self.role == Role.ADMIN

    @property
    def actor(self) -> str:
        if self.membership_id:
            return f"{self.membership.user.email} ({self.key_id})"
        return self.key_id


# App Mesh's default service quotas; an operator overrides them per tenant.
DEFAULT_QUOTAS: dict[str, int] = {
    "meshes": 15,
    "virtual_nodes_per_mesh": 500,
    "virtual_services_per_mesh": 500,
    "virtual_routers_per_mesh": 200,
    "routes_per_virtual_router": 50,
    "virtual_gateways_per_mesh": 50,
    "gateway_routes_per_virtual_gateway": 50,
    "backends_per_virtual_node": 50,
    "weighted_targets_per_route": 10,
    "listeners_per_virtual_node": 50,
    "tags_per_resource": 50,
}


class QuotaOverride(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="quota_overrides")
    name = models.CharField(max_length=64, choices=[(k, k) for k in DEFAULT_QUOTAS])
    limit = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_quota")]

    def __str__(self) -> str:
        return f"{self.tenant}: {self.name}={self.limit}"


def quotas_for(tenant: Tenant) -> dict[str, int]:
    values = dict(DEFAULT_QUOTAS)
    values.update(dict(tenant.quota_overrides.values_list("name", "limit")))
    return values


class AuditEvent(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="audit_events")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=300)
    action = models.CharField(max_length=64)
    resource_type = models.CharField(max_length=32)
    resource_arn = models.CharField(max_length=1024, blank=True, default="")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["tenant", "-at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%dT%H:%M:%S} {self.actor} {self.action} {self.resource_arn}"


# Identity rows live beside the code that uses them; imported here so Django registers them.
from tenants.identity.models import (  # noqa: E402, F401
    ControlPlaneCA,
    JoinToken,
    MeshCA,
    MeshIdentity,
)
