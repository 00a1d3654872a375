"""The stock DRF view the benchmark measures Meshplane against: token auth, a generic
RetrieveAPIView and a ModelSerializer over the same VirtualNode row."""

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


urlpatterns = [path("stock/virtual-nodes/<int:pk>", VirtualNodeDetail.as_view())]
