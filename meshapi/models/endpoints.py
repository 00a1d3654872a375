from django.db import models

from meshapi.models.meshes import Mesh
from meshapi.models.nodes import VirtualNode


class Endpoint(models.Model):
    """One address serving a virtual node's listener port, from wherever it was learnt.

    `registered` endpoints come from proxies announcing themselves when their xDS stream
    opens, `static` ones from the native API, the others from cloud discovery. `port` is
    the node's listener port the endpoint serves (what callers' clusters are keyed by);
    `target_port` is where the address accepts those connections: the same port, except
    for an explicit-mode proxy, whose Envoy ingress listens on a port of its own. Changes
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
    target_port = models.PositiveIntegerField()
    address = models.CharField(max_length=255)  # an IP address or a DNS name
    source = models.CharField(max_length=16, choices=Source.choices)
    instance_id = models.CharField(max_length=255, blank=True, default="")
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.HEALTHY)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["virtual_node", "port", "address", "target_port", "source"],
                name="uniq_endpoint",
            )
        ]
        indexes = [models.Index(fields=["mesh", "virtual_node"])]
        ordering = ["port", "address", "target_port", "source"]

    def __str__(self) -> str:
        target = f" → :{self.target_port}" if self.target_port != self.port else ""
        return f"{self.address}:{self.port}{target} ({self.source})"
