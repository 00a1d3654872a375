from django.db import models

from meshapi.models.base import MeshResourceBase


class VirtualRouter(MeshResourceBase):
    mesh = models.ForeignKey(
        "meshapi.Mesh", on_delete=models.CASCADE, related_name="virtual_routers"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["mesh", "name"], name="uniq_vrouter_name")]
        ordering = ["name"]


class Route(MeshResourceBase):
    mesh = models.ForeignKey("meshapi.Mesh", on_delete=models.CASCADE, related_name="routes")
    virtual_router = models.ForeignKey(
        VirtualRouter, on_delete=models.CASCADE, related_name="routes"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["virtual_router", "name"], name="uniq_route_name")
        ]
        ordering = ["name"]
