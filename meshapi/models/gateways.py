from django.db import models

from meshapi.models.base import MeshResourceBase


class VirtualGateway(MeshResourceBase):
    mesh = models.ForeignKey(
        "meshapi.Mesh", on_delete=models.CASCADE, related_name="virtual_gateways"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["mesh", "name"], name="uniq_vgateway_name")]
        ordering = ["name"]


class GatewayRoute(MeshResourceBase):
    mesh = models.ForeignKey(
        "meshapi.Mesh", on_delete=models.CASCADE, related_name="gateway_routes"
    )
    virtual_gateway = models.ForeignKey(
        VirtualGateway, on_delete=models.CASCADE, related_name="gateway_routes"
    )
    # Denormalised from spec.*.action.target so deleting a targeted service is guarded.
    target_service = models.CharField(max_length=255, blank=True, default="", db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["virtual_gateway", "name"], name="uniq_gateway_route_name"
            )
        ]
        ordering = ["name"]
