"""What each proxy of a mesh receives, on the native API.

    GET /api/v1/meshes/<mesh>/proxies/                                  every node and gateway
    GET /api/v1/meshes/<mesh>/proxies/virtualNode/<name>                its variants
    GET /api/v1/meshes/<mesh>/proxies/virtualNode/<name>/config         Envoy JSON
        ?consumer=grpc&mode=explicit   another variant (compiled on demand, then kept)
        &app_port=&ingress_port=&egress_port=   explicit mode: the ports a proxy declares
        &version=<v>                   a stored older version
        &diff=<older version>          unified diff from that version to this one
    GET /api/v1/meshes/<mesh>/proxies/virtualNode/<name>/history        stored versions

`virtualGateway/<name>` works the same way.
"""

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from meshapi import models as m
from meshapi.services import proxies as service
from meshapi.services.instances import instances_of, rollup
from tenants.scoping import Access, TenantScopedViewSet
from workers import loader
from workers.compiler import compile_proxy
from workers.pipeline import proxy_request

NODE, GATEWAY = m.ProxyKind.VIRTUAL_NODE, m.ProxyKind.VIRTUAL_GATEWAY


class VariantQuery(serializers.Serializer):
    consumer = serializers.ChoiceField(
        choices=["envoy", "grpc"], default="envoy", help_text="Who consumes the configuration."
    )
    mode = serializers.ChoiceField(
        choices=["redirect", "explicit"], default="redirect", help_text="Traffic interception."
    )


def _port_field(what: str) -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=1,
        max_value=65535,
        required=False,
        help_text=f"Explicit mode: {what}, as the proxy declares it (default: the "
        "control plane's).",
    )


PORT_FIELDS = ("app_port", "ingress_port", "egress_port")


class PortsQuery(VariantQuery):
    app_port = _port_field("the app's port (replaces the port of the node's only listener)")
    ingress_port = _port_field("the first ingress listener's port (15000)")
    egress_port = _port_field("the first loopback egress listener's port (15001)")


class ConfigQuery(PortsQuery):
    version = serializers.CharField(
        required=False, help_text="A stored version (see history); the current one if absent."
    )
    diff = serializers.CharField(
        required=False, help_text="An older stored version: answer a unified diff from it."
    )


class ProxySerializer(serializers.Serializer):
    """A proxy's current configuration in one variant (consumer, interception)."""

    kind = serializers.CharField()
    name = serializers.CharField()
    nodeId = serializers.CharField()
    consumer = serializers.CharField()
    interception = serializers.CharField()
    appPort = serializers.IntegerField(
        allow_null=True, help_text="Explicit mode: the declared app port; null: the default."
    )
    ingressPort = serializers.IntegerField(
        allow_null=True, help_text="Explicit mode: the declared ingress port; null: 15000."
    )
    egressPort = serializers.IntegerField(
        allow_null=True, help_text="Explicit mode: the declared egress port; null: 15001."
    )
    version = serializers.CharField(allow_null=True, help_text="Null until first compiled.")
    compiledAt = serializers.DateTimeField(allow_null=True)
    compiledRevision = serializers.IntegerField(
        allow_null=True, help_text="The mesh revision this version was compiled from."
    )
    warnings = serializers.ListField(child=serializers.CharField())


class VersionSerializer(serializers.Serializer):
    version = serializers.CharField()
    compiledAt = serializers.DateTimeField()
    compiledRevision = serializers.IntegerField()
    current = serializers.BooleanField()
    typeVersions = serializers.DictField(child=serializers.CharField())
    warnings = serializers.ListField(child=serializers.CharField())


class NackSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="listeners, routes, clusters, endpoints or secrets.")
    version = serializers.CharField(help_text="The version the proxy rejected.")
    errorDetail = serializers.CharField(help_text="The proxy's own words.")
    at = serializers.DateTimeField()


class ConnectionSerializer(serializers.Serializer):
    stream = serializers.CharField()
    replica = serializers.CharField()
    protocol = serializers.CharField(help_text="sotw or delta.")
    peer = serializers.CharField(help_text="The SPIFFE id it proved, or 'insecure'.")
    openedAt = serializers.DateTimeField()
    closedAt = serializers.DateTimeField(allow_null=True)


class InstanceSerializer(serializers.Serializer):
    """A running proxy of this node or gateway, as the xDS server last saw it."""

    instanceId = serializers.CharField()
    address = serializers.CharField()
    ports = serializers.ListField(child=serializers.IntegerField())
    consumer = serializers.CharField()
    interception = serializers.CharField()
    appPort = serializers.IntegerField(
        allow_null=True, help_text="Explicit mode: the app port it declared (null: none)."
    )
    ingressPort = serializers.IntegerField(
        allow_null=True, help_text="Explicit mode: the ingress port it declared (null: none)."
    )
    egressPort = serializers.IntegerField(
        allow_null=True, help_text="Explicit mode: the egress port it declared (null: none)."
    )
    replica = serializers.CharField(help_text="The serve_xds replica holding its stream.")
    connected = serializers.BooleanField()
    connectedSince = serializers.DateTimeField(allow_null=True)
    disconnectedAt = serializers.DateTimeField(allow_null=True)
    ackedVersions = serializers.DictField(
        child=serializers.CharField(), help_text="Per type, the version it acknowledged."
    )
    lastNack = NackSerializer(allow_null=True)
    connections = ConnectionSerializer(many=True, help_text="Its recent streams, newest first.")


class InstanceSummarySerializer(serializers.Serializer):
    connected = serializers.IntegerField()
    upToDate = serializers.IntegerField(
        help_text="Connected instances that acknowledged their variant's current version "
        "of every type they use."
    )
    rejectingCurrent = serializers.IntegerField(
        help_text="Connected instances whose last NACK refused a current version."
    )


class ProxyDetailSerializer(serializers.Serializer):
    kind = serializers.CharField()
    name = serializers.CharField()
    nodeId = serializers.CharField()
    variants = ProxySerializer(many=True)
    instances = InstanceSerializer(many=True)
    instanceSummary = InstanceSummarySerializer()


class ConfigSerializer(ProxySerializer):
    """Envoy JSON per resource type (proto field names), sorted by resource name; with
    `diff`, a unified diff between the two versions instead of the resources."""

    stored = serializers.BooleanField(help_text="False: compiled on demand, not stored yet.")
    current = serializers.BooleanField()
    typeVersions = serializers.DictField(child=serializers.CharField())
    metadata = serializers.DictField()
    listeners = serializers.ListField(child=serializers.DictField(), required=False)
    routes = serializers.ListField(child=serializers.DictField(), required=False)
    clusters = serializers.ListField(child=serializers.DictField(), required=False)
    endpoints = serializers.ListField(child=serializers.DictField(), required=False)
    secrets = serializers.ListField(child=serializers.DictField(), required=False)
    diffFrom = serializers.CharField(required=False)
    diff = serializers.CharField(required=False)


def _type_versions(versions: dict) -> dict[str, str]:
    return {label: versions.get(t, "") for t, label in service.TYPE_NAMES.items()}


def _summary(mesh_name: str, kind: str, name: str, variant: tuple, row) -> dict:
    """`variant`: (consumer, interception) or (consumer, interception, app, ingress, egress)."""
    current = row.current if row is not None else None
    app, ingress, egress = (tuple(variant[2:]) + (0, 0, 0))[:3]
    return {
        "kind": kind,
        "name": name,
        "nodeId": f"mesh/{mesh_name}/{kind}/{name}",
        "consumer": variant[0],
        "interception": variant[1],
        "appPort": app or None,
        "ingressPort": ingress or None,
        "egressPort": egress or None,
        "version": current.version if current else None,
        "compiledAt": current.compiled_at if current else None,
        "compiledRevision": current.revision if current else None,
        "warnings": current.warnings if current else [],
    }


def _version(row: m.ProxyVersion, current_id: int | None) -> dict:
    return {
        "version": row.version,
        "compiledAt": row.compiled_at,
        "compiledRevision": row.revision,
        "current": row.pk == current_id,
        "typeVersions": _type_versions(row.type_versions),
        "warnings": row.warnings,
    }


MESH_PARAM = {"mesh": "Name of the mesh."}
PROXY_PARAM = {**MESH_PARAM, "proxy": "virtualNode/<name> or virtualGateway/<name>."}


class ProxyViewSet(TenantScopedViewSet):
    """Configuration the compiler produced for each proxy of a mesh."""

    queryset = m.ProxyConfig.objects.all()
    serializer_class = ProxySerializer
    lookup_url_kwarg = "proxy"
    lookup_value_regex = "virtual(?:Node|Gateway)/[^/]+"
    action_access = {"config": Access.READ, "history": Access.READ}

    @property
    def path_parameters(self) -> dict[str, str]:  # type: ignore[override]
        return MESH_PARAM if self.action == "list" else PROXY_PARAM

    def _variant(self, kind: str = NODE, query=VariantQuery) -> dict:
        """The query's variant; with a ports query, `ports` (app, ingress, egress), 0 for
        each not given. Ports apply to a virtual node's explicit-mode proxy only."""
        params = query(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        data = dict(params.validated_data)
        try:
            service.check_variant(kind, data["consumer"], data["mode"])
        except service.BadVariant as exc:
            raise serializers.ValidationError({exc.field: [exc.message]}) from exc
        given = [f for f in PORT_FIELDS if f in data]
        if given and (kind != NODE or data["mode"] != "explicit"):
            why = (
                "a virtual gateway listens on its listeners' ports"
                if kind != NODE
                else "only an explicit-mode proxy declares its ports; add mode=explicit"
            )
            raise serializers.ValidationError({given[0]: [f"{given[0]}: {why}."]})
        data["ports"] = tuple(data.get(f, 0) for f in PORT_FIELDS)
        return data

    def _proxy(self) -> service.ProxyRef:
        kind, name = self.kwargs["proxy"].split("/", 1)
        try:
            return service.find_proxy(self.tenant, self.kwargs["mesh"], kind, name)
        except service.ProxyNotFound as exc:
            raise exceptions.NotFound(str(exc)) from exc

    @extend_schema(parameters=[VariantQuery])
    def list(self, request, mesh: str):
        """Every virtual node and gateway of the mesh, with its configuration version,
        when it was compiled, from which mesh revision, and what was left out (warnings).
        A gateway is always shown as Envoy (consumer=envoy)."""
        variant = self._variant()
        mesh_row = m.Mesh.objects.filter(tenant=self.tenant, name=mesh).only("id", "name").first()
        if mesh_row is None:
            raise exceptions.NotFound(f"Mesh '{mesh}' not found.")
        page = self.paginate_queryset(service.proxies_of(mesh_row))
        consumer, mode = variant["consumer"], variant["mode"]
        rows = service.current_configs(mesh_row, page, consumer, mode)
        body = [
            _summary(
                mesh_row.name,
                kind,
                name,
                (consumer if kind == NODE else "envoy", mode),
                rows.get((kind, name)),
            )
            for kind, name in page
        ]
        return self.get_paginated_response(ProxySerializer(body, many=True).data)

    @extend_schema(responses=ProxyDetailSerializer)
    def retrieve(self, request, mesh: str, proxy: str):
        """The proxy, every variant of it that is kept compiled, and its instances: each
        running proxy connected (or lately connected) to the xDS server, the version of
        each type it acknowledged and the last configuration it rejected, with why."""
        ref = self._proxy()
        rows = {service.variant_key(r)[2:]: r for r in service.variants_of(ref)}
        rows.setdefault(("envoy", "redirect", 0, 0, 0), None)
        variants = [_summary(ref.mesh.name, ref.kind, ref.name, v, rows[v]) for v in sorted(rows)]
        instances = instances_of(ref)
        return Response(
            {
                "kind": ref.kind,
                "name": ref.name,
                "nodeId": f"mesh/{ref.mesh.name}/{ref.label}",
                "variants": variants,
                "instances": instances,
                "instanceSummary": rollup(ref, instances),
            }
        )

    @extend_schema(parameters=[ConfigQuery], responses=ConfigSerializer)
    @action(detail=True, methods=["get"])
    def config(self, request, mesh: str, proxy: str):
        """The listeners, routes, clusters, endpoints (and secrets) the proxy receives, as
        Envoy JSON. A variant never asked for before is compiled on the spot and kept
        compiled from then on."""
        ref = self._proxy()
        query = self._variant(ref.kind, ConfigQuery)
        variant = (query["consumer"], query["mode"], *query["ports"])
        row = service.variant(ref, query["consumer"], query["mode"], query["ports"])
        head = _summary(ref.mesh.name, ref.kind, ref.name, variant, row)
        if row is None or row.current is None:
            if query.get("version") or query.get("diff"):
                missing = query.get("version") or query.get("diff")
                ports = ", ".join(
                    f"{f} {p}" for f, p in zip(PORT_FIELDS, query["ports"], strict=True) if p
                )
                raise exceptions.NotFound(
                    f"Version '{missing}' of {ref.label} ({variant[0]}, {variant[1]}"
                    f"{', ' + ports if ports else ''}) is not stored; it has not been "
                    "compiled yet."
                )
            return Response(self._on_demand(ref, variant, head))
        try:
            shown = (
                service.stored_version(row, query["version"]) if "version" in query else row.current
            )
            older = service.stored_version(row, query["diff"]) if "diff" in query else None
        except service.ProxyNotFound as exc:
            raise exceptions.NotFound(str(exc)) from exc
        body = {
            **head,
            **_version(shown, row.current_id),
            "compiledRevision": shown.revision,
            "stored": True,
            "metadata": shown.metadata,
        }
        row.mesh = ref.mesh
        if older is not None:
            body["diffFrom"] = older.version
            body["diff"] = service.unified_diff(row, older, shown)
        else:
            body.update(service.resources_json(ref.mesh.id, shown))
        return Response(body)

    def _on_demand(self, ref: service.ProxyRef, variant: tuple, head: dict) -> dict:
        """`variant`: (consumer, interception, app, ingress, egress)."""
        loaded = loader.load(ref.mesh.id)
        if loaded is None:
            raise exceptions.NotFound(f"Mesh '{ref.mesh.name}' not found.")
        snapshot = compile_proxy(loaded.ctx, proxy_request((ref.kind, ref.name, *variant)))
        with transaction.atomic():
            if service.request_variant(ref, variant[0], variant[1], tuple(variant[2:])):
                mesh_id = ref.mesh.id
                transaction.on_commit(lambda: _enqueue(mesh_id))
        return {
            **head,
            "version": snapshot.version,
            "compiledRevision": loaded.revision,
            "warnings": list(snapshot.warnings),
            "stored": False,
            "current": True,
            "typeVersions": _type_versions(dict(snapshot.type_versions)),
            "metadata": dict(snapshot.metadata),
            **service.snapshot_json(snapshot),
        }

    @extend_schema(parameters=[PortsQuery], responses=VersionSerializer(many=True))
    @action(detail=True, methods=["get"])
    def history(self, request, mesh: str, proxy: str):
        """Stored versions of the proxy's configuration, newest first (the last 20)."""
        ref = self._proxy()
        query = self._variant(ref.kind, PortsQuery)
        row = service.variant(ref, query["consumer"], query["mode"], query["ports"])
        versions = (
            list(row.history.select_related("manifest").defer("manifest__resources"))
            if row is not None
            else []
        )
        page = self.paginate_queryset(versions)
        current = row.current_id if row is not None else None
        return self.get_paginated_response([_version(v, current) for v in page])


def _enqueue(mesh_id: int) -> None:
    from workers.tasks.compile import enqueue_compile

    enqueue_compile(mesh_id)
