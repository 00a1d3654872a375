"""Endpoints of a virtual node on the native API: list (every source), add and delete
static ones. /api/v1/meshes/<mesh>/virtual-nodes/<node>/endpoints/[<id>]"""

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, serializers, status
from rest_framework.response import Response

from meshapi import models as m
from meshapi.services import endpoints as service
from meshapi.services import resources
from tenants.api.serializers import StrictSerializer
from tenants.scoping import TenantScopedViewSet, for_tenant


class EndpointSerializer(serializers.ModelSerializer):
    virtualNodeName = serializers.CharField(source="virtual_node.name", read_only=True)
    instanceId = serializers.CharField(source="instance_id", read_only=True)
    targetPort = serializers.IntegerField(
        source="target_port",
        read_only=True,
        help_text="Where the address accepts the listener port's connections: the port "
        "itself, or an explicit-mode proxy's own ingress port.",
    )
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)

    class Meta:
        model = m.Endpoint
        fields = [
            "id",
            "virtualNodeName",
            "port",
            "address",
            "targetPort",
            "source",
            "health",
            "instanceId",
            "createdAt",
            "updatedAt",
        ]
        read_only_fields = fields


class StaticEndpointSerializer(StrictSerializer):
    port = serializers.IntegerField(min_value=1, max_value=65535)
    address = serializers.CharField(max_length=255, help_text="An IP address or a DNS host name.")
    health = serializers.ChoiceField(
        choices=m.Endpoint.Health.choices, default=m.Endpoint.Health.HEALTHY
    )
    instanceId = serializers.CharField(max_length=255, required=False, default="")
    targetPort = serializers.IntegerField(
        min_value=1,
        max_value=65535,
        required=False,
        help_text="Where the address accepts the listener port's connections (default: port).",
    )


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def _api_error(exc: service.EndpointError) -> exceptions.APIException:
    if isinstance(exc, service.EndpointNotFound):
        return exceptions.NotFound(exc.message)
    if isinstance(exc, service.EndpointConflict):
        return Conflict(exc.message)
    return serializers.ValidationError({exc.field: [exc.message]})


class EndpointViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Where a virtual node's listener ports are served. Static endpoints are yours to add
    and delete; registered ones come and go with proxies, discovered ones with discovery.
    A change recompiles only the endpoints (EDS) of the proxies that reach the node."""

    queryset = m.Endpoint.objects.select_related("virtual_node")
    serializer_class = EndpointSerializer
    lookup_value_regex = "[0-9]+"
    path_parameters = {"mesh": "Name of the mesh.", "virtual_node": "Name of the virtual node."}

    def narrow(self, queryset):
        return queryset.filter(
            mesh__name=self.kwargs["mesh"], virtual_node__name=self.kwargs["virtual_node"]
        )

    def list(self, request, *args, **kwargs):
        mesh, node = self.kwargs["mesh"], self.kwargs["virtual_node"]
        nodes = for_tenant(m.VirtualNode.objects.all(), self.tenant)
        if not nodes.filter(mesh__name=mesh, name=node).exists():
            if not for_tenant(m.Mesh.objects.all(), self.tenant).filter(name=mesh).exists():
                raise exceptions.NotFound(f"Mesh '{mesh}' not found.")
            raise exceptions.NotFound(f"Virtual node '{node}' not found in mesh '{mesh}'.")
        return super().list(request, *args, **kwargs)

    @extend_schema(request=StaticEndpointSerializer, responses={201: EndpointSerializer})
    def create(self, request, *args, **kwargs):
        """Add a static endpoint on one of the node's listener ports."""
        data = self.validated_input(StaticEndpointSerializer)
        try:
            endpoint = service.add_static(
                self.tenant,
                resources.Writer(actor=request.auth.actor),
                mesh_name=self.kwargs["mesh"],
                node_name=self.kwargs["virtual_node"],
                port=data["port"],
                address=data["address"],
                health=data["health"],
                instance_id=data["instanceId"],
                target_port=data.get("targetPort"),
            )
        except service.EndpointError as exc:
            raise _api_error(exc) from exc
        return Response(self.get_serializer(endpoint).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        """Delete a static endpoint."""
        try:
            service.remove_static(
                self.tenant,
                resources.Writer(actor=request.auth.actor),
                mesh_name=self.kwargs["mesh"],
                node_name=self.kwargs["virtual_node"],
                endpoint_id=int(self.kwargs["pk"]),
            )
        except service.EndpointError as exc:
            raise _api_error(exc) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)
