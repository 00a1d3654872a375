"""The native API at /api/v1/: tenant management, mesh resources, the OpenAPI document."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from meshapi.api import endpoints, mtls, proxies, views
from tenants.scoping import NativeRouter

MESH = r"meshes/(?P<mesh>[^/]+)"

router = NativeRouter()
router.register("meshes", views.MeshViewSet, basename="mesh")
router.register(f"{MESH}/virtual-nodes", views.VirtualNodeViewSet, basename="virtual-node")
router.register(f"{MESH}/virtual-services", views.VirtualServiceViewSet, basename="virtual-service")
router.register(f"{MESH}/virtual-routers", views.VirtualRouterViewSet, basename="virtual-router")
router.register(
    f"{MESH}/virtual-routers/(?P<virtual_router>[^/]+)/routes", views.RouteViewSet, basename="route"
)
router.register(f"{MESH}/virtual-gateways", views.VirtualGatewayViewSet, basename="virtual-gateway")
router.register(
    f"{MESH}/virtual-gateways/(?P<virtual_gateway>[^/]+)/gateway-routes",
    views.GatewayRouteViewSet,
    basename="gateway-route",
)
router.register(
    f"{MESH}/virtual-nodes/(?P<virtual_node>[^/]+)/endpoints",
    endpoints.EndpointViewSet,
    basename="endpoint",
)
router.register(f"{MESH}/proxies", proxies.ProxyViewSet, basename="proxy")

urlpatterns = [
    path("", include("tenants.api.urls")),
    path("", include("tenants.identity.urls")),
    *router.urls,
    re_path(
        rf"^{MESH}/mtls/?$",
        mtls.MtlsPolicyViewSet.as_view({"get": "retrieve", "put": "update"}),
        name="mesh-mtls",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="native-schema"),
    path("schema/ui/", SpectacularSwaggerView.as_view(url_name="native-schema"), name="native-ui"),
]
