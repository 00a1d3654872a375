from django.db import models

from meshapi.models.meshes import Mesh
from meshapi.models.nodes import VirtualNode


class Endpoint(models.Model):
    """One address serving a virtual node's listener port, from wherever it was learnt.

    `registered` endpoints come from proxies announcing themselves when their xDS stream
    opens, `static` ones from the native API, the others from cloud discovery. Changes
    here bump the mesh revision like any other write, but only recompile the
    ClusterLoadAssignments (EDS) of the proxies that reach the node.
    """

    class Source(models.TextChoices):
        REGISTERED = "registered"
        STATIC = "static"
        CLOUDMAP = "cloudmap"
        ECS = "ecs"
        EC2 = "ec2"

    class Health(models.TextChoices):
        HEALTHY = "HEALTHY"
        UNHEALTHY = "UNHEALTHY"
        DRAINING = "DRAINING"
        UNKNOWN = "UNKNOWN"

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    mesh = models.ForeignKey(Mesh, on_delete=models.CASCADE, related_name="endpoints")
    virtual_node = models.ForeignKey(
        VirtualNode, on_delete=models.CASCADE, related_name="endpoints"
    )
    port = models.PositiveIntegerField()
    address = models.CharField(max_length=255)  # an IP address or a DNS name
    source = models.CharField(max_length=16, choices=Source.choices)
    instance_id = models.CharField(max_length=255, blank=True, default="")
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.HEALTHY)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["virtual_node", "port", "address", "source"], name="uniq_endpoint"
            )
        ]
        indexes = [models.Index(fields=["mesh", "virtual_node"])]
        ordering = ["port", "address", "source"]

    def __str__(self) -> str:
        return f"{self.address}:{self.port} ({self.source})"
