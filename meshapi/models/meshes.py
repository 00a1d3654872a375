from django.db import models

from meshapi.models.base import MeshResourceBase


class MtlsMode(models.TextChoices):
    DISABLED = "DISABLED"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


class Mesh(MeshResourceBase):
    # Bumped by every committed write to the mesh or anything in it; the compiler
    # records the revision it compiled so a reconciler can find meshes that lag.
    revision = models.BigIntegerField(default=1)
    compiled_revision = models.BigIntegerField(default=0)
    # The native automatic mTLS policy (App Mesh has none, so it is not part of `spec`):
    # PERMISSIVE/STRICT secure every proxy-to-proxy hop with the workload certificates and
    # authorize callers by SPIFFE id. Set through meshapi.services.mtls.
    mtls_mode = models.CharField(max_length=16, choices=MtlsMode.choices, default=MtlsMode.DISABLED)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_mesh_name")]
        ordering = ["name"]
