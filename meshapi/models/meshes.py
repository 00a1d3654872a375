from django.db import models

from meshapi.models.base import MeshResourceBase


class Mesh(MeshResourceBase):
    # Bumped by every committed write to the mesh or anything in it; the compiler
    # records the revision it compiled so a reconciler can find meshes that lag.
    revision = models.BigIntegerField(default=1)
    compiled_revision = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_mesh_name")]
        ordering = ["name"]
