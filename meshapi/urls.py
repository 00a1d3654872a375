from django.urls import include, path, re_path

from meshapi.appmesh.views import appmesh_entry

urlpatterns = [
    re_path(r"^v20190125(?:/(?P<rest>.*))?$", appmesh_entry),
    path("api/v1/", include("meshapi.api.urls")),
]
