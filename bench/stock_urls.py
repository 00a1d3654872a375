"""The stock DRF views the benchmark measures Meshplane against: token auth, a generic
RetrieveAPIView and ModelSerializer over the same VirtualNode row, and a generic
ListAPIView over the same 100 rows showing what an App Mesh list item shows."""

from django.urls import path
from rest_framework import generics, permissions, serializers
from rest_framework.authentication import TokenAuthentication

from meshapi.models import VirtualNode


class VirtualNodeModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = VirtualNode
        fields = "__all__"


class VirtualNodeDetail(generics.RetrieveAPIView):
    authentication_classes = [TokenAuthentication]
    permission_classes = [permissions.IsAuthenticated]
    queryset = VirtualNode.objects.all()
    serializer_class = VirtualNodeModelSerializer


class VirtualNodeRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = VirtualNode
        fields = ["id", "name", "mesh", "version", "created_at", "updated_at"]


class VirtualNodeList(generics.ListAPIView):
    authentication_classes = [TokenAuthentication]
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = VirtualNodeRefSerializer
    pagination_class = None

    def get_queryset(self):
        return VirtualNode.objects.filter(mesh_id=self.kwargs["mesh_pk"]).order_by("name")


urlpatterns = [
    path("stock/virtual-nodes/<int:pk>", VirtualNodeDetail.as_view()),
    path("stock/meshes/<int:mesh_pk>/virtual-nodes", VirtualNodeList.as_view()),
]
