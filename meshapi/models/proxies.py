"""What the compiler stored: per proxy variant, its current configuration and a bounded
history of earlier versions; the resources themselves once per mesh, by content hash.

- `ProxyConfig`: one per (mesh, proxy kind + name, consumer, interception, ports). Exists for
  the default variant of every node and gateway once compiled, and for any other variant
  an agent or a user asked for (kept compiled until nothing has used it for
  MESHPLANE_VARIANT_TTL_SECONDS: workers/pipeline.py).
- `ProxyVersion`: one per version a proxy had (the newest is `ProxyConfig.current`): its
  manifest, warnings, metadata.
- `ConfigManifest`: one per (mesh, version): the manifest {type_url: {name: hash}} and the
  per-type versions, shared by every proxy compiled to that version (a version is a content
  hash of them: workers/compiler/snapshot.py), so a change reaching 1,000 proxies stores
  its manifest once, not in 1,000 version rows.
- `ConfigResource`: one serialized xDS message per (mesh, type, content hash), shared by
  every proxy and version that uses it, so a cluster used by 500 proxies is stored once.
- `CompileState`: per mesh, the inputs the stored configuration was compiled from
  (a content hash per resource), so the next compile recompiles only what a change
  reaches. Its row lock serializes compiles of one mesh.
"""

from django.db import models

from meshapi.models.meshes import Mesh

HISTORY_LIMIT = 20  # versions kept per proxy variant, for diffs and rollback


# What tells one stored configuration of a proxy from another: the node, who consumes it
# and how traffic reaches it (explicit mode: the ports it declared). A variant key is a
# tuple of these, in this order.
VARIANT_FIELDS = (
    "kind",
    "name",
    "consumer",
    "interception",
    "app_port",
    "ingress_port",
    "egress_port",
)


class ProxyKind(models.TextChoices):
    VIRTUAL_NODE = "virtualNode"
    VIRTUAL_GATEWAY = "virtualGateway"


class ProxyConfig(models.Model):
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    # No index of its own: uniq_proxy_config leads with the mesh (fewer indexes to keep up
    # on the 1,000 rows a change can rewrite).
    mesh = models.ForeignKey(
        Mesh, on_delete=models.CASCADE, related_name="proxy_configs", db_index=False
    )
    kind = models.CharField(max_length=16, choices=ProxyKind.choices)
    name = models.CharField(max_length=255)
    consumer = models.CharField(max_length=16, default="envoy")
    interception = models.CharField(max_length=16, default="redirect")
    # Explicit interception: the ports the proxy declared (node.metadata app_port,
    # ingress_port, egress_port), part of the variant so that two proxies of one node on
    # one host get configurations listening on their own ports. 0 = the default
    # (redirect variants always 0).
    app_port = models.PositiveIntegerField(default=0)
    ingress_port = models.PositiveIntegerField(default=0)
    egress_port = models.PositiveIntegerField(default=0)
    # None until the first compile of a variant that was asked for. Always one of this
    # variant's own versions, its newest: a compile sets it in the transaction that inserts
    # that version. No database constraint and no index: a change reaching 1,000 proxies
    # rewrites this column in 1,000 rows, and without them each rewrite is a HOT update
    # (no indexed column changes; see the table's fillfactor, migration 0008) with no
    # constraint trigger to run at commit. Nothing needs them: the only versions deleted
    # are those past HISTORY_LIMIT (never the newest, so never a current one) and those of
    # a variant being deleted with them (its own row goes too, in the same transaction,
    # whether by a compile, drop_unused or a mesh deletion's cascade), hence DO_NOTHING:
    # no version deletion has to look for variants pointing at it, which without the index
    # would scan the table.
    current = models.ForeignKey(
        "meshapi.ProxyVersion",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    # The mesh revision `current` was compiled at; a store never lowers it.
    revision = models.BigIntegerField(default=0)
    # What the configuration was computed from: ["<kind> <name>", ...] (workers.compiler's
    # `requires`), so the next compile can tell which proxies a change reaches, removed
    # edges included.
    requires = models.JSONField(default=list)
    requested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["mesh", *VARIANT_FIELDS],
                name="uniq_proxy_config",
            )
        ]
        ordering = list(VARIANT_FIELDS)

    def __str__(self) -> str:
        return f"{self.kind}/{self.name} ({self.consumer}, {self.interception})"


class ProxyVersion(models.Model):
    # One index, (proxy, -id): it serves the foreign key, the newest-first history and
    # trimming, and a look-up by version among a proxy's HISTORY_LIMIT versions. A change
    # reaching 1,000 proxies inserts 1,000 rows; each index more is 1,000 entries more.
    # No database constraint either (its check of 1,000 inserted rows at commit was ~5 ms
    # of a compile's 67 to its publish; migration 0009): versions are inserted only by a
    # compile, for variants it read under the mesh's compile lock, and variants are deleted
    # only by a compile (under that lock: no insert for them meanwhile) or with their mesh
    # (the ORM's CASCADE deletes their versions). The one race left: a mesh deleted (it is
    # empty then) while an older compile of it commits. Its deletion no longer fails on
    # the constraint; that compile's versions stay behind, referenced by nothing, until the
    # hourly prune (meshapi.services.proxies.prune_orphaned_versions).
    proxy = models.ForeignKey(
        ProxyConfig,
        on_delete=models.CASCADE,
        related_name="history",
        db_index=False,
        db_constraint=False,
    )
    version = models.CharField(max_length=64)
    revision = models.BigIntegerField()
    compiled_at = models.DateTimeField()
    # The (mesh, version) manifest. No database constraint and no index, for the reasons
    # `proxy` has none: versions are inserted only by a compile, which inserts or finds
    # their manifests in the same statement under the mesh's compile lock, and manifests
    # are deleted only by the hourly prune under that lock, once no version refers to them
    # (meshapi.services.proxies.prune_manifests), or with their mesh (whose versions go
    # with its variants). DO_NOTHING: deleting a manifest never looks for versions.
    manifest = models.ForeignKey(
        "meshapi.ConfigManifest",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    warnings = models.JSONField(default=list)
    metadata = models.JSONField(default=dict)

    class Meta:
        indexes = [models.Index(fields=["proxy", "-id"])]
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.version

    # The manifest's, for readers of one version (select_related("manifest") spares a query).
    @property
    def type_versions(self) -> dict[str, str]:
        return self.manifest.type_versions

    @property
    def resources(self) -> dict[str, dict[str, str]]:
        return self.manifest.resources


class ConfigManifest(models.Model):
    """What a version is made of, once per (mesh, version): a version is a content hash of
    its per-type versions, each a hash of its (name, resource hash) pairs."""

    # No index of its own: uniq_config_manifest leads with the mesh. With its constraint, as
    # ConfigResource.mesh: a mesh deleted while an older compile of it commits a manifest new
    # to the mesh can fail its deletion at commit (as a new resource already could); deleting
    # it again succeeds.
    mesh = models.ForeignKey(Mesh, on_delete=models.CASCADE, related_name="+", db_index=False)
    version = models.CharField(max_length=64)
    type_versions = models.JSONField(default=dict)  # {type_url: version}
    resources = models.JSONField(default=dict)  # {type_url: {name: hash}}, empty types left out

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["mesh", "version"], name="uniq_config_manifest")
        ]

    def __str__(self) -> str:
        return self.version


class ConfigResource(models.Model):
    mesh = models.ForeignKey(Mesh, on_delete=models.CASCADE, related_name="+")
    type_url = models.CharField(max_length=128)
    digest = models.CharField(max_length=64)  # sha256 of `body`
    body = models.BinaryField()  # the message, serialized deterministically

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["mesh", "type_url", "digest"], name="uniq_config_resource"
            )
        ]

    def __str__(self) -> str:
        return f"{self.type_url.rsplit('.', 1)[-1]} {self.digest[:12]}"


class CompileState(models.Model):
    mesh = models.OneToOneField(
        Mesh, on_delete=models.CASCADE, primary_key=True, related_name="compile_state"
    )
    revision = models.BigIntegerField(default=0)
    # {"<kind> <name>": content hash} of every input the stored configuration reflects;
    # None until the first compile (which is then a full one).
    inputs = models.JSONField(null=True, blank=True)
    compiled_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(default=0)
    proxies_compiled = models.IntegerField(default=0)
    proxies_changed = models.IntegerField(default=0)
    full = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"mesh {self.mesh_id} at revision {self.revision}"
