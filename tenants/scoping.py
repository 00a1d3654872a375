"""Tenant isolation for the native API, in one place.

Every native viewset derives from `TenantScopedViewSet`, which

- narrows `queryset` to the calling key's tenant, so another tenant's object does not
  exist for the caller (404, never 403) and lists never show it;
- names the access each action needs (read or write; `admin_only` views need an admin)
  and refuses an action it was not told about instead of running it unscoped;
- validates list filters with a `filterset_class` (a serializer of query parameters), so
  bad filter values answer 400 naming the parameter;
- runs every write in one transaction, rolled back when the answer is an error, so a
  failed request leaves nothing behind.

Concrete viewsets then say only what they serve: `queryset`, `serializer_class` and,
where lists filter, `filterset_class`.
"""

import logging
from enum import StrEnum
from typing import Any, ClassVar

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions, serializers
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.routers import SimpleRouter
from rest_framework.viewsets import GenericViewSet

from tenants.models import Tenant
from tenants.permissions import key_allows, refusal

log = logging.getLogger(__name__)


class Access(StrEnum):
    READ = "read"
    WRITE = "write"


# The actions DRF's mixins define. Anything else must be declared by the viewset.
STANDARD_ACTIONS: dict[str, Access] = {
    "list": Access.READ,
    "retrieve": Access.READ,
    "metadata": Access.READ,
    "create": Access.WRITE,
    "update": Access.WRITE,
    "partial_update": Access.WRITE,
    "destroy": Access.WRITE,
}


class UndeclaredAction(exceptions.PermissionDenied):
    default_detail = "This action is not available."


def for_tenant(queryset: QuerySet, tenant: Tenant) -> QuerySet:
    """`queryset` narrowed to the rows `tenant` owns."""
    if queryset.model is Tenant:
        return queryset.filter(pk=tenant.pk)
    return queryset.filter(tenant=tenant)


class ScopedAccess(BasePermission):
    """A key of the tenant, allowed the access the view's action needs."""

    message = "This access key may not do that."

    def has_permission(self, request, view) -> bool:
        key = request.auth
        if key is None:
            return False
        if view.action is None:
            raise exceptions.MethodNotAllowed(request.method)
        write = view.access_for(view.action) is Access.WRITE
        if key_allows(key, write=write, admin_only=view.admin_only):
            return True
        self.message = refusal(key, write=write, admin_only=view.admin_only)
        return False


class FilterSet(serializers.Serializer):
    """Query parameters of a list, validated like a body; subclasses implement `filter`."""

    def filter(self, queryset: QuerySet, data: dict[str, Any]) -> QuerySet:
        raise NotImplementedError


class TenantScopedSchema(AutoSchema):
    """Documents what the base adds: parent path parameters and the list's filters."""

    def get_override_parameters(self):
        params = list(super().get_override_parameters())
        for name, description in getattr(self.view, "path_parameters", {}).items():
            params.append(
                OpenApiParameter(name, OpenApiTypes.STR, OpenApiParameter.PATH, True, description)
            )
        filterset = getattr(self.view, "filterset_class", None)
        if filterset is not None and self._is_list_view():
            params.append(filterset)
        return params


class TenantScopedViewSet(GenericViewSet):
    permission_classes = [ScopedAccess]
    schema = TenantScopedSchema()
    # Names in URLs may hold dots ("svc.local"); DRF's default lookup regex refuses them.
    lookup_value_regex = "[^/]+"

    admin_only: ClassVar[bool] = False
    # Access for actions beyond DRF's standard ones, e.g. {"revoke": Access.WRITE}.
    action_access: ClassVar[dict[str, Access]] = {}
    filterset_class: ClassVar[type[FilterSet] | None] = None
    # URL keyword arguments besides the lookup, for the schema: {"mesh": "Mesh name."}.
    path_parameters: ClassVar[dict[str, str]] = {}

    def access_for(self, action: str | None) -> Access:
        access = self.action_access.get(action) or STANDARD_ACTIONS.get(action)
        if access is None:
            # A programming error: never guess, never run it against an unscoped queryset.
            log.error("%s: action %r is not declared in action_access", type(self), action)
            raise UndeclaredAction()
        return access

    @property
    def tenant(self) -> Tenant:
        return self.request.auth.tenant

    def get_queryset(self) -> QuerySet:
        queryset = super().get_queryset()
        if getattr(self, "swagger_fake_view", False):
            return queryset.none()
        self.access_for(self.action)
        return self.narrow(for_tenant(queryset, self.tenant))

    def narrow(self, queryset: QuerySet) -> QuerySet:
        """Further narrowing (to a parent in the URL); the tenant is already applied."""
        return queryset

    def validated_input(self, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
        """The request body checked by an input serializer (400 naming fields if not)."""
        serializer = serializer_class(data=self.request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        queryset = super().filter_queryset(queryset)
        if self.filterset_class is None or self.action != "list":
            return queryset
        filterset = self.filterset_class(data=self.request.query_params)
        filterset.is_valid(raise_exception=True)
        return filterset.filter(queryset, filterset.validated_data)

    def initial(self, request, *args, **kwargs):
        # DRF's parsers read the stream and skip Django's DATA_UPLOAD_MAX_MEMORY_SIZE check.
        length = request.META.get("CONTENT_LENGTH") or "0"
        limit = settings.MESHPLANE_MAX_BODY_BYTES
        if not length.isdigit() or int(length) > limit:
            raise exceptions.ParseError(f"Request body is larger than {limit} bytes.")
        super().initial(request, *args, **kwargs)

    def dispatch(self, request, *args, **kwargs):
        if request.method in SAFE_METHODS:
            return super().dispatch(request, *args, **kwargs)
        with transaction.atomic():
            response = super().dispatch(request, *args, **kwargs)
            if response.status_code >= 400:
                transaction.set_rollback(True)
            return response


class NativeRouter(SimpleRouter):
    """Routes that answer with or without a trailing slash (APPEND_SLASH is off, and a
    redirect would drop a POST body)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"
