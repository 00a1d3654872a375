from django.db import models

from meshapi.models.base import MeshResourceBase


class VirtualNode(MeshResourceBase):
    mesh = models.ForeignKey("meshapi.Mesh", on_delete=models.CASCADE, related_name="virtual_nodes")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["mesh", "name"], name="uniq_vnode_name")]
        ordering = ["name"]


class VirtualService(MeshResourceBase):
    mesh = models.ForeignKey(
        "meshapi.Mesh", on_delete=models.CASCADE, related_name="virtual_services"
    )
    # Denormalised from spec.provider so deletion guards are one indexed query.
    provider_kind = models.CharField(max_length=16, blank=True, default="")
    provider_name = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["mesh", "name"], name="uniq_vservice_name")]
        indexes = [models.Index(fields=["mesh", "provider_kind", "provider_name"])]
        ordering = ["name"]
