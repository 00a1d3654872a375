"""Mesh resources on the native API (read-only), and the static assets of the schema UI."""

import posixpath

from django.contrib.staticfiles import finders
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.views import static
from rest_framework import mixins
from rest_framework.exceptions import NotFound

from meshapi import models as m
from meshapi.api import serializers as s
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
from tenants.scoping import TenantScopedViewSet, for_tenant


class MeshResourceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    lookup_field = "name"


class MeshChildViewSet(MeshResourceViewSet):
    """Resources under /meshes/<mesh>/, or under a router or gateway of that mesh.

    The URL names the parents; an unknown parent answers 404 rather than an empty list,
    so a typo is not mistaken for "nothing there".
    """

    kind: Kind

    @property
    def path_parameters(self) -> dict[str, str]:  # type: ignore[override]
        params = {"mesh": "Name of the mesh."}
        if self.kind.parent is not None:
            params[self.kind.parent_field] = f"Name of the {self.kind.parent.label}."
        return params

    def narrow(self, queryset: QuerySet) -> QuerySet:
        queryset = queryset.filter(mesh__name=self.kwargs["mesh"])
        if self.kind.parent is not None:
            field = self.kind.parent_field
            queryset = queryset.filter(**{f"{field}__name": self.kwargs[field]})
        return queryset

    def list(self, request, *args, **kwargs):
        self._require_parent()
        return super().list(request, *args, **kwargs)

    def _require_parent(self) -> None:
        mesh_name = self.kwargs["mesh"]
        if self.kind.parent is None:
            parents = for_tenant(m.Mesh.objects.all(), self.tenant).filter(name=mesh_name)
            missing = f"Mesh '{mesh_name}' not found."
        else:
            name = self.kwargs[self.kind.parent_field]
            parents = for_tenant(self.kind.parent.model.objects.all(), self.tenant).filter(
                mesh__name=mesh_name, name=name
            )
            missing = (
                f"{self.kind.parent.label.capitalize()} '{name}' not found in mesh '{mesh_name}'."
            )
        if not parents.exists():
            raise NotFound(missing)


class MeshViewSet(MeshResourceViewSet):
    queryset = m.Mesh.objects.all()
    serializer_class = s.MeshSerializer
    kind = MESH


class VirtualNodeViewSet(MeshChildViewSet):
    queryset = m.VirtualNode.objects.select_related("mesh")
    serializer_class = s.VirtualNodeSerializer
    kind = VIRTUAL_NODE


class VirtualServiceViewSet(MeshChildViewSet):
    queryset = m.VirtualService.objects.select_related("mesh")
    serializer_class = s.VirtualServiceSerializer
    kind = VIRTUAL_SERVICE


class VirtualRouterViewSet(MeshChildViewSet):
    queryset = m.VirtualRouter.objects.select_related("mesh")
    serializer_class = s.VirtualRouterSerializer
    kind = VIRTUAL_ROUTER


class RouteViewSet(MeshChildViewSet):
    queryset = m.Route.objects.select_related("mesh", "virtual_router")
    serializer_class = s.RouteSerializer
    kind = ROUTE


class VirtualGatewayViewSet(MeshChildViewSet):
    queryset = m.VirtualGateway.objects.select_related("mesh")
    serializer_class = s.VirtualGatewaySerializer
    kind = VIRTUAL_GATEWAY


class GatewayRouteViewSet(MeshChildViewSet):
    queryset = m.GatewayRoute.objects.select_related("mesh", "virtual_gateway")
    serializer_class = s.GatewayRouteSerializer
    kind = GATEWAY_ROUTE


def static_asset(request: HttpRequest, path: str) -> HttpResponse:
    """Serve an app's static file (the schema UI's Swagger assets) from the API process.

    gunicorn serves no static files and the project ships no CDN or whitenoise, so the
    self-hosted Swagger UI would otherwise load without its JavaScript. Files are found
    the way `collectstatic` finds them; a deployment with a front proxy or CDN can serve
    STATIC_URL itself and never reach this view.
    """
    if request.method not in ("GET", "HEAD"):
        raise Http404
    normalized = posixpath.normpath(path).lstrip("/")
    absolute = finders.find(normalized)
    if not absolute or isinstance(absolute, list):
        raise Http404(f"'{path}' is not a static file.")
    directory, name = posixpath.split(absolute)
    response = static.serve(request, name, document_root=directory)
    response["Cache-Control"] = "public, max-age=86400"
    return response
