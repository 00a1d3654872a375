import uuid

from django.db import models


class MeshResourceBase(models.Model):
    """Fields every App Mesh resource shares. `spec` is stored exactly as validated."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=255)
    uid = models.UUIDField(default=uuid.uuid4, editable=False)
    spec = models.JSONField(default=dict)
    version = models.BigIntegerField(default=1)
    status = models.CharField(max_length=16, default="ACTIVE")
    tags = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.name
