"""Mesh resources on the native API, in App Mesh's camelCase.

Read-only for now: writes go through the App Mesh-compatible API. Later issues add
what App Mesh never had to these same resources.
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from meshapi import models as m
from meshapi.services import resources
from meshapi.services.kinds import (
    GATEWAY_ROUTE,
    MESH,
    ROUTE,
    VIRTUAL_GATEWAY,
    VIRTUAL_NODE,
    VIRTUAL_ROUTER,
    VIRTUAL_SERVICE,
    Kind,
)

COMMON_FIELDS = [
    "name",
    "arn",
    "uid",
    "spec",
    "version",
    "status",
    "tags",
    "createdAt",
    "lastUpdatedAt",
]


class TagSerializer(serializers.Serializer):
    key = serializers.CharField()
    value = serializers.CharField()


class MeshResourceSerializer(serializers.ModelSerializer):
    """Fields every mesh resource has. Subclasses set `kind` and `Meta.model`."""

    kind: Kind

    arn = serializers.SerializerMethodField()
    tags = serializers.SerializerMethodField()
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    lastUpdatedAt = serializers.DateTimeField(source="updated_at", read_only=True)

    class Meta:
        fields = COMMON_FIELDS
        read_only_fields = fields

    def get_arn(self, row) -> str:
        return resources.arn_of(self.context["request"].auth.tenant, self.kind, row)

    @extend_schema_field(TagSerializer(many=True))
    def get_tags(self, row) -> list[dict[str, str]]:
        return [{"key": k, "value": v} for k, v in sorted(row.tags.items())]


class MeshSerializer(MeshResourceSerializer):
    kind = MESH
    revision = serializers.IntegerField(
        read_only=True, help_text="Bumped by every committed change to the mesh or its resources."
    )
    compiledRevision = serializers.IntegerField(
        source="compiled_revision",
        read_only=True,
        help_text="The revision proxies' configuration was last compiled from.",
    )

    class Meta(MeshResourceSerializer.Meta):
        model = m.Mesh
        fields = [*COMMON_FIELDS, "revision", "compiledRevision"]
        read_only_fields = fields


class MeshChildSerializer(MeshResourceSerializer):
    meshName = serializers.CharField(source="mesh.name", read_only=True)

    class Meta(MeshResourceSerializer.Meta):
        fields = ["meshName", *COMMON_FIELDS]
        read_only_fields = fields


class VirtualNodeSerializer(MeshChildSerializer):
    kind = VIRTUAL_NODE

    class Meta(MeshChildSerializer.Meta):
        model = m.VirtualNode


class VirtualServiceSerializer(MeshChildSerializer):
    kind = VIRTUAL_SERVICE

    class Meta(MeshChildSerializer.Meta):
        model = m.VirtualService


class VirtualRouterSerializer(MeshChildSerializer):
    kind = VIRTUAL_ROUTER

    class Meta(MeshChildSerializer.Meta):
        model = m.VirtualRouter


class RouteSerializer(MeshChildSerializer):
    kind = ROUTE
    virtualRouterName = serializers.CharField(source="virtual_router.name", read_only=True)

    class Meta(MeshChildSerializer.Meta):
        model = m.Route
        fields = ["meshName", "virtualRouterName", *COMMON_FIELDS]
        read_only_fields = fields


class VirtualGatewaySerializer(MeshChildSerializer):
    kind = VIRTUAL_GATEWAY

    class Meta(MeshChildSerializer.Meta):
        model = m.VirtualGateway


class GatewayRouteSerializer(MeshChildSerializer):
    kind = GATEWAY_ROUTE
    virtualGatewayName = serializers.CharField(source="virtual_gateway.name", read_only=True)

    class Meta(MeshChildSerializer.Meta):
        model = m.GatewayRoute
        fields = ["meshName", "virtualGatewayName", *COMMON_FIELDS]
        read_only_fields = fields
