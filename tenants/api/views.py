"""The native tenant API: who am I, access keys, members, audit log, quotas.

Scoping, access checks and write transactions live in `tenants.scoping`; writes go
through `tenants.services`, which also audit them.
"""

from collections.abc import Sequence

from django.db import IntegrityError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from tenants import services
from tenants.api.serializers import (
    AccessKeyCreateSerializer,
    AccessKeySerializer,
    AuditEventFilterSet,
    AuditEventSerializer,
    CallerSerializer,
    MemberCreateSerializer,
    MemberSerializer,
    MemberUpdateSerializer,
    NewAccessKeySerializer,
    QuotaSerializer,
)
from tenants.models import DEFAULT_QUOTAS, AccessKey, AuditEvent, Membership, QuotaOverride, Tenant
from tenants.scoping import Access, TenantScopedViewSet


def _rule_error(exc: services.RuleViolation) -> serializers.ValidationError:
    return serializers.ValidationError({exc.field: [exc.message]})


class TenantViewSet(TenantScopedViewSet):
    queryset = Tenant.objects.all()
    serializer_class = CallerSerializer
    action_access = {"me": Access.READ}

    @action(detail=False, methods=["get"])
    def me(self, request):
        """The caller's tenant, and the access key and role it is calling with."""
        # The key was loaded with its tenant and member: nothing left to query.
        return Response(self.get_serializer(request.auth).data)


class AccessKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Access keys of the tenant. Secrets are returned once, by create, and never again."""

    queryset = AccessKey.objects.select_related("membership__user").order_by("-created_at", "-id")
    serializer_class = AccessKeySerializer
    lookup_field = "key_id"
    admin_only = True
    action_access = {"revoke": Access.WRITE}

    @extend_schema(request=AccessKeyCreateSerializer, responses={201: NewAccessKeySerializer})
    def create(self, request):
        """Create a key for yourself, or with `email` for another member."""
        data = self.validated_input(AccessKeyCreateSerializer)
        caller = request.auth
        new = services.create_access_key(
            self.tenant,
            data["membership"] or caller.membership,
            description=data.get("description", ""),
            read_only=data["readOnly"],
            expires_at=data["expiresAt"],
            actor=caller.actor,
        )
        body = NewAccessKeySerializer(new.key, context={"secret": new.secret}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=AccessKeySerializer, operation_id="access_keys_revoke")
    @action(detail=True, methods=["post"])
    def revoke(self, request, key_id: str):
        """Revoke a key; it stops working on both APIs at once. Revoking twice is harmless."""
        return Response(self.get_serializer(self._revoke()).data)

    def destroy(self, request, key_id: str):
        """Same as revoke; the key stays listed, with `revokedAt`."""
        self._revoke()
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _revoke(self) -> AccessKey:
        key = self.get_object()
        revoked = services.revoke_access_key(self.tenant, key.key_id, actor=self.request.auth.actor)
        key.revoked_at = revoked.revoked_at
        return key


class MemberViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Members of the tenant and their roles (admin, editor, viewer). Admins only."""

    queryset = Membership.objects.select_related("user").order_by("user__email")
    serializer_class = MemberSerializer
    lookup_field = "user__email"
    lookup_url_kwarg = "email"
    admin_only = True

    def get_object(self) -> Membership:
        self.kwargs["email"] = self.kwargs["email"].lower()  # stored lower-cased
        return super().get_object()

    @extend_schema(request=MemberCreateSerializer, responses={201: MemberSerializer})
    def create(self, request):
        """Add a user, by email, with a role (viewer unless given)."""
        data = self.validated_input(MemberCreateSerializer)
        try:
            membership = services.add_member(
                self.tenant, data["email"], data["role"], actor=request.auth.actor
            )
        except IntegrityError as exc:  # added by a concurrent request since validation
            raise serializers.ValidationError(
                {"email": [f"{data['email']} is already a member of {self.tenant.slug}."]}
            ) from exc
        return Response(self.get_serializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MemberUpdateSerializer, responses=MemberSerializer)
    def partial_update(self, request, email: str):
        """Change a member's role. The last admin cannot be demoted."""
        membership = self.get_object()
        data = self.validated_input(MemberUpdateSerializer)
        try:
            membership = services.change_member_role(
                self.tenant,
                membership.user.email,
                data["role"],
                actor=request.auth.actor,
            )
        except services.RuleViolation as exc:
            raise _rule_error(exc) from exc
        return Response(self.get_serializer(membership).data)

    def destroy(self, request, email: str):
        """Remove a member and their access keys. The last admin cannot be removed."""
        membership = self.get_object()
        try:
            services.remove_member(self.tenant, membership.user.email, actor=request.auth.actor)
        except services.RuleViolation as exc:
            raise _rule_error(exc) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class NewestFirst(CursorPagination):
    """Stable pages while new events arrive at the top; no COUNT over a growing table."""

    ordering = ("-at", "-id")
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Every write to the tenant, made through either API: who, when, what, before/after."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilterSet
    lookup_value_regex = "[0-9]+"
    pagination_class = NewestFirst


class QuotaViewSet(TenantScopedViewSet):
    """Quotas in force for the tenant: App Mesh's defaults unless an operator changed them.

    Changing a quota is an operator action: `manage.py set_quota <tenant> <name> <limit>`.
    """

    queryset = QuotaOverride.objects.all()
    serializer_class = QuotaSerializer
    lookup_field = "name"

    def list(self, request):
        page = self.paginate_queryset(self._quotas())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, name: str):
        if name not in DEFAULT_QUOTAS:
            raise NotFound(f"No quota named '{name}'; one of: {', '.join(DEFAULT_QUOTAS)}.")
        return Response(self.get_serializer(self._quotas([name])[0]).data)

    def _quotas(self, names: Sequence[str] = ()) -> Sequence[dict]:
        names = names or list(DEFAULT_QUOTAS)
        overrides = dict(self.get_queryset().filter(name__in=names).values_list("name", "limit"))
        return [
            {
                "name": name,
                "limit": overrides.get(name, DEFAULT_QUOTAS[name]),
                "default": DEFAULT_QUOTAS[name],
                "overridden": name in overrides,
            }
            for name in names
        ]
