"""Identity rows: per-mesh settings and CAs, join tokens, the control plane's CA.

Registered through `tenants.models` (Django finds an app's models in its `models` module).
Private keys are stored encrypted with `tenants.crypto`; join tokens only as digests.
"""

from django.db import models
from django.utils import timezone

DEFAULT_CERTIFICATE_LIFETIME = 24 * 3600
MIN_CERTIFICATE_LIFETIME = 10
MAX_CERTIFICATE_LIFETIME = 30 * 24 * 3600


class ProxyKind(models.TextChoices):
    VIRTUAL_NODE = "virtualNode"
    VIRTUAL_GATEWAY = "virtualGateway"


class MeshIdentity(models.Model):
    """Identity settings of one mesh (absent = the defaults)."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    mesh = models.OneToOneField("meshapi.Mesh", on_delete=models.CASCADE, related_name="identity")
    certificate_lifetime_seconds = models.PositiveIntegerField(default=DEFAULT_CERTIFICATE_LIFETIME)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"identity of mesh {self.mesh_id}"


class TrustedCAQuerySet(models.QuerySet):
    def trusted(self, now=None) -> "TrustedCAQuerySet":
        """The CA that signs now, and rotated-out ones some unexpired leaf still chains to."""
        now = now or timezone.now()
        return self.filter(
            models.Q(rotated_at__isnull=True) | models.Q(last_leaf_not_after__gt=now)
        )


class MeshCA(models.Model):
    """One generation of a mesh's CA. The row with `rotated_at` unset signs; a rotated-out
    one stays trusted until `last_leaf_not_after` (the last leaf it signed) has passed."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    mesh = models.ForeignKey("meshapi.Mesh", on_delete=models.CASCADE, related_name="cas")
    generation = models.PositiveIntegerField()
    certificate_pem = models.TextField()
    key_encrypted = models.TextField()
    fingerprint_sha256 = models.CharField(max_length=64)
    not_after = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    rotated_at = models.DateTimeField(null=True, blank=True)
    last_leaf_not_after = models.DateTimeField(null=True, blank=True)
    # Set once a rotated-out CA's last leaf expired and its mesh was recompiled without it.
    retired_at = models.DateTimeField(null=True, blank=True)

    objects = TrustedCAQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["mesh", "generation"], name="uniq_mesh_ca_generation"),
            models.UniqueConstraint(
                fields=["mesh"],
                condition=models.Q(rotated_at__isnull=True),
                name="uniq_mesh_signing_ca",
            ),
        ]
        ordering = ["mesh_id", "generation"]

    def __str__(self) -> str:
        return f"CA {self.generation} of mesh {self.mesh_id}"


class JoinToken(models.Model):
    """A credential a proxy trades, with a CSR, for its first certificate. Bound to one
    mesh and kind, and to a node name or a name pattern (`cart-*`) for scaling groups."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    mesh = models.ForeignKey("meshapi.Mesh", on_delete=models.CASCADE, related_name="join_tokens")
    token_id = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=ProxyKind.choices)
    node_name = models.CharField(max_length=255, blank=True, default="")
    name_pattern = models.CharField(max_length=255, blank=True, default="")
    description = models.CharField(max_length=200, blank=True, default="")
    expires_at = models.DateTimeField()
    max_uses = models.PositiveIntegerField(default=1)
    uses = models.PositiveIntegerField(default=0)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.token_id

    def state(self, now=None) -> str:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        if self.uses >= self.max_uses:
            return "usedUp"
        return "active"


class ControlPlaneCA(models.Model):
    """The deployment-wide CA behind the control plane's own TLS (ADS and join ports);
    agents pin its certificate. One row, created on first need."""

    name = models.CharField(max_length=32, unique=True, default="default")
    certificate_pem = models.TextField()
    key_encrypted = models.TextField()
    not_after = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"control plane CA {self.name}"
