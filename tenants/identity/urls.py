"""Routes of mesh identity on the native API (included by meshapi/api/urls.py)."""

from django.urls import path, re_path

from tenants.identity import api
from tenants.scoping import NativeRouter

MESH = r"meshes/(?P<mesh>[^/]+)"

router = NativeRouter()
router.register(f"{MESH}/join-tokens", api.JoinTokenViewSet, basename="join-token")

identity = api.MeshIdentityViewSet
urlpatterns = [
    *router.urls,
    re_path(
        rf"^{MESH}/identity/?$",
        identity.as_view({"get": "retrieve", "patch": "partial_update"}),
        name="mesh-identity",
    ),
    re_path(
        rf"^{MESH}/identity/rotate/?$",
        identity.as_view({"post": "rotate"}),
        name="mesh-identity-rotate",
    ),
    path("identity/ca", api.control_plane_ca, name="identity-ca"),
]
