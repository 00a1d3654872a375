"""Mesh identity on the native API.

- /api/v1/meshes/<mesh>/join-tokens[/<tokenId>]: list, create (the token is in the
  answer once), get, DELETE = revoke (the row stays listed, `state: revoked`).
- /api/v1/meshes/<mesh>/identity: trust domain, certificate lifetime (PATCH), the CAs
  and the trust bundle; POST .../identity/rotate rotates the mesh CA.
- /api/v1/identity/ca: the control plane's CA certificate (PEM, no auth) that agents pin
  for the join and ADS ports.

Scoping and access come from `TenantScopedViewSet`: another tenant's mesh is 404, writes
need an editor's or admin's read-write key, and every write is one transaction.
"""

from datetime import timedelta

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, serializers, status
from rest_framework.response import Response

from meshapi.models import Mesh
from tenants.api.serializers import StrictSerializer
from tenants.identity import services
from tenants.identity.models import (
    MAX_CERTIFICATE_LIFETIME,
    MIN_CERTIFICATE_LIFETIME,
    JoinToken,
    ProxyKind,
)
from tenants.scoping import Access, TenantScopedViewSet, for_tenant

# ---------------------------------------------------------------- serializers


class JoinTokenSerializer(serializers.ModelSerializer):
    tokenId = serializers.CharField(source="token_id", read_only=True)
    meshName = serializers.CharField(source="mesh.name", read_only=True)
    name = serializers.CharField(source="node_name", read_only=True)
    namePattern = serializers.CharField(source="name_pattern", read_only=True)
    expiresAt = serializers.DateTimeField(source="expires_at", read_only=True)
    maxUses = serializers.IntegerField(source="max_uses", read_only=True)
    lastUsedAt = serializers.DateTimeField(source="last_used_at", read_only=True, allow_null=True)
    revokedAt = serializers.DateTimeField(source="revoked_at", read_only=True, allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    createdBy = serializers.CharField(source="created_by", read_only=True)
    state = serializers.SerializerMethodField()

    class Meta:
        model = JoinToken
        fields = [
            "tokenId",
            "meshName",
            "kind",
            "name",
            "namePattern",
            "description",
            "expiresAt",
            "maxUses",
            "uses",
            "lastUsedAt",
            "revokedAt",
            "createdAt",
            "createdBy",
            "state",
        ]
        read_only_fields = fields

    def get_state(self, token: JoinToken) -> str:
        """active, expired, revoked or usedUp."""
        return token.state()


class NewJoinTokenSerializer(JoinTokenSerializer):
    token = serializers.SerializerMethodField(
        help_text="The join token itself. Shown only in this answer: keep it now."
    )

    class Meta(JoinTokenSerializer.Meta):
        fields = [*JoinTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields

    def get_token(self, token: JoinToken) -> str:
        return self.context["secret"]


class JoinTokenCreateSerializer(StrictSerializer):
    kind = serializers.ChoiceField(choices=ProxyKind.choices, default=ProxyKind.VIRTUAL_NODE)
    name = serializers.CharField(
        max_length=255, required=False, default="", help_text="The node's name."
    )
    namePattern = serializers.CharField(
        max_length=255,
        required=False,
        default="",
        help_text="Instead of name: names matching it join, '*' standing for any characters.",
    )
    expiresInSeconds = serializers.IntegerField(
        min_value=1,
        max_value=int(services.MAX_TOKEN_TTL.total_seconds()),
        default=int(services.DEFAULT_TOKEN_TTL.total_seconds()),
    )
    maxUses = serializers.IntegerField(min_value=1, max_value=services.MAX_TOKEN_USES, default=1)
    description = serializers.CharField(max_length=200, required=False, default="")


class CertificateAuthoritySerializer(serializers.Serializer):
    generation = serializers.IntegerField()
    state = serializers.CharField(help_text="signing, trusted (rotated out) or retired.")
    fingerprintSha256 = serializers.CharField(source="fingerprint_sha256")
    notAfter = serializers.DateTimeField(source="not_after")
    createdAt = serializers.DateTimeField(source="created_at")
    rotatedAt = serializers.DateTimeField(source="rotated_at", allow_null=True)
    lastLeafNotAfter = serializers.DateTimeField(source="last_leaf_not_after", allow_null=True)
    certificate = serializers.CharField(source="certificate_pem")


class MeshIdentitySerializer(serializers.Serializer):
    meshName = serializers.CharField()
    trustDomain = serializers.CharField()
    spiffeIdPrefix = serializers.CharField()
    certificateLifetimeSeconds = serializers.IntegerField()
    certificateAuthorities = CertificateAuthoritySerializer(many=True)
    trustBundle = serializers.CharField()


class MeshIdentityUpdateSerializer(StrictSerializer):
    certificateLifetimeSeconds = serializers.IntegerField(
        min_value=MIN_CERTIFICATE_LIFETIME, max_value=MAX_CERTIFICATE_LIFETIME
    )


# ---------------------------------------------------------------- views


def _api_error(exc: Exception) -> exceptions.APIException:
    if isinstance(exc, services.NotFound):
        return exceptions.NotFound(exc.message)
    if isinstance(exc, services.RuleViolation):
        return serializers.ValidationError({exc.field: [exc.message]})
    raise exc


class MeshScoped:
    path_parameters = {"mesh": "Name of the mesh."}

    def mesh(self) -> Mesh:
        name = self.kwargs["mesh"]
        mesh = for_tenant(Mesh.objects.all(), self.tenant).filter(name=name).first()
        if mesh is None:
            raise exceptions.NotFound(f"Mesh '{name}' not found.")
        return mesh


class JoinTokenViewSet(
    MeshScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet
):
    """Join tokens of a mesh: what a proxy trades, with a CSR, for its first certificate.
    The token is returned once, by create; only its digest is kept."""

    queryset = JoinToken.objects.select_related("mesh")
    serializer_class = JoinTokenSerializer
    lookup_field = "token_id"
    lookup_value_regex = "[a-z0-9]+"

    def narrow(self, queryset: QuerySet) -> QuerySet:
        return queryset.filter(mesh__name=self.kwargs["mesh"])

    def list(self, request, *args, **kwargs):
        self.mesh()  # an unknown mesh is 404, not an empty list
        return super().list(request, *args, **kwargs)

    @extend_schema(request=JoinTokenCreateSerializer, responses={201: NewJoinTokenSerializer})
    def create(self, request, mesh: str):
        """Create a token for one node (`name`) or a scaling group (`namePattern`)."""
        data = self.validated_input(JoinTokenCreateSerializer)
        try:
            new = services.create_join_token(
                self.tenant,
                mesh,
                kind=data["kind"],
                node_name=data["name"],
                name_pattern=data["namePattern"],
                expires_in=timedelta(seconds=data["expiresInSeconds"]),
                max_uses=data["maxUses"],
                description=data["description"],
                actor=request.auth.actor,
            )
        except (services.NotFound, services.RuleViolation) as exc:
            raise _api_error(exc) from exc
        body = NewJoinTokenSerializer(new.token, context={"secret": new.secret}).data
        return Response(body, status=status.HTTP_201_CREATED)

    def destroy(self, request, mesh: str, token_id: str):
        """Revoke the token: it joins nothing more. It stays listed as revoked."""
        try:
            services.revoke_join_token(self.tenant, mesh, token_id, actor=request.auth.actor)
        except services.NotFound as exc:
            raise _api_error(exc) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeshIdentityViewSet(MeshScoped, TenantScopedViewSet):
    """A mesh's identity: trust domain, certificate lifetime, CAs and trust bundle."""

    queryset = Mesh.objects.all()
    serializer_class = MeshIdentitySerializer
    action_access = {"rotate": Access.WRITE}

    def _describe(self, mesh: Mesh) -> dict:
        cas = services.mesh_cas(mesh)
        bundle = services.mesh_trust_bundle(mesh)
        for ca in cas:
            if ca.rotated_at is None:
                ca.state = "signing"
            else:
                ca.state = "trusted" if ca.certificate_pem in bundle else "retired"
        domain = services.trust_domain(self.tenant)
        return {
            "meshName": mesh.name,
            "trustDomain": domain,
            "spiffeIdPrefix": f"spiffe://{domain}/mesh/{mesh.name}/",
            "certificateLifetimeSeconds": int(services.certificate_lifetime(mesh).total_seconds()),
            "certificateAuthorities": cas,
            "trustBundle": bundle,
        }

    def retrieve(self, request, mesh: str):
        """The mesh's identity settings and CAs (a mesh has none until its first join or
        rotation)."""
        return Response(MeshIdentitySerializer(self._describe(self.mesh())).data)

    @extend_schema(request=MeshIdentityUpdateSerializer, responses=MeshIdentitySerializer)
    def partial_update(self, request, mesh: str):
        """Set the lifetime of certificates issued from now on (10 s to 30 days)."""
        data = self.validated_input(MeshIdentityUpdateSerializer)
        try:
            services.set_certificate_lifetime(
                self.tenant, mesh, data["certificateLifetimeSeconds"], actor=request.auth.actor
            )
        except (services.NotFound, services.RuleViolation) as exc:
            raise _api_error(exc) from exc
        return Response(MeshIdentitySerializer(self._describe(self.mesh())).data)

    @extend_schema(request=None, responses=MeshIdentitySerializer)
    def rotate(self, request, mesh: str):
        """Rotate the mesh CA: a new CA signs from now on; the old one stays in the trust
        bundle until the last certificate it signed has expired."""
        try:
            services.rotate_mesh_ca(self.tenant, mesh, actor=request.auth.actor)
        except services.NotFound as exc:
            raise _api_error(exc) from exc
        return Response(MeshIdentitySerializer(self._describe(self.mesh())).data)


@require_GET
def control_plane_ca(request: HttpRequest) -> HttpResponse:
    """The control plane's CA certificate, public: agents pin it before they hold any
    credential (it is what `manage.py identity_ca` prints)."""
    return HttpResponse(services.control_plane_ca_pem(), content_type="application/x-pem-file")
