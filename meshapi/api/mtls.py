"""A mesh's automatic mTLS policy on the native API: /api/v1/meshes/<mesh>/mtls.

GET answers the mode (DISABLED until set); PUT `{"mode": "DISABLED"|"PERMISSIVE"|"STRICT"}`
sets it (an editor's or admin's read-write key), recompiling every proxy of the mesh.
Scoping comes from `TenantScopedViewSet`: another tenant's mesh is 404.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from meshapi.models import Mesh
from meshapi.services import mtls as service
from meshapi.services import resources
from tenants.api.serializers import StrictSerializer
from tenants.scoping import TenantScopedViewSet


class MtlsPolicySerializer(serializers.Serializer):
    meshName = serializers.CharField(read_only=True)
    mode = serializers.ChoiceField(choices=service.MODES, read_only=True)


class MtlsPolicyUpdateSerializer(StrictSerializer):
    mode = serializers.ChoiceField(
        choices=service.MODES,
        help_text=(
            "STRICT: proxies accept only mTLS from allowed callers. PERMISSIVE: also "
            "plaintext (not authorized), for migrations. DISABLED: no automatic mTLS."
        ),
    )


def _api_error(exc: service.MtlsError) -> exceptions.APIException:
    if isinstance(exc, service.MeshNotFound):
        return exceptions.NotFound(exc.message)
    return serializers.ValidationError({exc.field: [exc.message]})


class MtlsPolicyViewSet(TenantScopedViewSet):
    """Automatic mTLS between the mesh's proxies, with authorization by SPIFFE identity:
    a virtual node admits the proxies whose backends reach it. Listener TLS set through
    the App Mesh API wins where present; gateway listeners are left as configured."""

    queryset = Mesh.objects.all()
    serializer_class = MtlsPolicySerializer
    path_parameters = {"mesh": "Name of the mesh."}

    def retrieve(self, request, mesh: str):
        """The mesh's mTLS mode."""
        try:
            body = service.get_policy(self.tenant, mesh)
        except service.MtlsError as exc:
            raise _api_error(exc) from exc
        return Response(MtlsPolicySerializer(body).data)

    @extend_schema(request=MtlsPolicyUpdateSerializer, responses=MtlsPolicySerializer)
    def update(self, request, mesh: str):
        """Set the mesh's mTLS mode; every proxy of the mesh gets a new configuration."""
        data = self.validated_input(MtlsPolicyUpdateSerializer)
        try:
            body = service.set_policy(
                self.tenant,
                resources.Writer(actor=request.auth.actor),
                mesh_name=mesh,
                mode=data["mode"],
            )
        except service.MtlsError as exc:
            raise _api_error(exc) from exc
        return Response(MtlsPolicySerializer(body).data)
