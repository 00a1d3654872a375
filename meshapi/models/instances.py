"""Who is connected to the xDS server: one row per proxy instance, and one per stream.

- `ProxyInstance`: a running proxy (an Envoy, a gRPC client, a lite proxy) of a virtual
  node or gateway, identified by the instance id it declares in `node.metadata` (its
  address when it declares none). The row is kept after the stream closes, so the tenant
  sees which instance went away and when; `acked` and `last_nack` are what the proxy last
  said about each resource type, so "which version does it run, and why did it refuse the
  last one" is answered without the proxy.
- `ProxyConnection`: the connection history, one row per xDS stream (replica, peer
  identity, opened/closed), bounded per instance.
"""

from django.db import models

from meshapi.models.meshes import Mesh

CONNECTIONS_KEPT = 20  # history rows kept per instance


class ProxyInstance(models.Model):
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    mesh = models.ForeignKey(Mesh, on_delete=models.CASCADE, related_name="proxy_instances")
    kind = models.CharField(max_length=16)
    name = models.CharField(max_length=255)
    instance_id = models.CharField(max_length=255)
    address = models.CharField(max_length=255, blank=True, default="")
    ports = models.JSONField(default=list)
    consumer = models.CharField(max_length=16, default="envoy")
    interception = models.CharField(max_length=16, default="redirect")
    # Explicit mode: the ports it declared (0 = not declared: the control plane's default),
    # which pick the variant it is served.
    app_port = models.PositiveIntegerField(default=0)
    ingress_port = models.PositiveIntegerField(default=0)
    egress_port = models.PositiveIntegerField(default=0)
    replica = models.CharField(max_length=255, blank=True, default="")
    # The stream currently holding the instance (any replica); a close from an older
    # stream of the same instance must not mark it disconnected.
    stream = models.CharField(max_length=64, blank=True, default="")
    connected_since = models.DateTimeField(null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    acked = models.JSONField(default=dict)  # {type_url: version}
    last_nack = models.JSONField(null=True, blank=True)  # {typeUrl, version, errorDetail, at}
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["mesh", "kind", "name", "instance_id"], name="uniq_proxy_instance"
            )
        ]
        indexes = [models.Index(fields=["mesh", "kind", "name"])]
        ordering = ["kind", "name", "instance_id"]

    def __str__(self) -> str:
        return f"{self.kind}/{self.name} {self.instance_id}"

    @property
    def connected(self) -> bool:
        return self.connected_since is not None and self.disconnected_at is None


class ProxyConnection(models.Model):
    instance = models.ForeignKey(
        ProxyInstance, on_delete=models.CASCADE, related_name="connections"
    )
    stream = models.CharField(max_length=64)
    replica = models.CharField(max_length=255, blank=True, default="")
    protocol = models.CharField(max_length=8, default="sotw")  # sotw | delta
    peer = models.CharField(max_length=512, blank=True, default="")  # SPIFFE id or "insecure"
    opened_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["instance", "-id"])]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.instance} stream {self.stream}"
