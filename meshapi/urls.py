from django.conf import settings
from django.urls import include, path, re_path

from meshapi.api.views import static_asset
from meshapi.appmesh.views import appmesh_entry

urlpatterns = [
    re_path(r"^v20190125(?:/(?P<rest>.*))?$", appmesh_entry),
    path("api/v1/", include("meshapi.api.urls")),
    # The schema UI's assets (gunicorn serves no static files); see static_asset.
    path(settings.STATIC_URL.lstrip("/") + "<path:path>", static_asset),
]
