"""`serve_xds --insecure`: loopback only, and the tenant only from what the proxy declares
(an App Mesh ARN that must name the same proxy as node.id, or meshplane.tenant)."""

import grpc
import pytest
from django.core.management import CommandError, call_command
from envoy.service.discovery.v3 import discovery_pb2

from tests.xds.conftest import needs_redis
from tests.xds.support import XdsProcess, wait_compiled
from workers.compiler import xds

SOTW = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def test_insecure_mode_refuses_a_non_loopback_address():
    with pytest.raises(CommandError, match="--insecure serves only loopback"):
        call_command("serve_xds", "--insecure", "--host", "10.1.2.3")


def open_insecure(ads: str, node_id: str, metadata: dict):
    with grpc.insecure_channel(ads) as channel:
        call = channel.stream_stream(
            SOTW,
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )
        request = discovery_pb2.DiscoveryRequest(type_url=xds.CLUSTER)
        request.node.id = node_id
        request.node.metadata.update(metadata)
        try:
            for response in call(iter([request]), timeout=10):
                return response, grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            return None, exc.code(), exc.details() or ""
    return None, grpc.StatusCode.OK, ""


@needs_redis
def test_insecure_mode_takes_the_tenant_from_the_declared_arn(alice, worker, api_server):
    client = alice.appmesh()
    client.create_mesh(meshName="shop")
    for name in ("web", "db"):
        client.create_virtual_node(meshName="shop", virtualNodeName=name, spec={})
    wait_compiled(alice.tenant, "shop")
    arn = "arn:aws:appmesh:us-east-1:{}:mesh/shop/virtualNode/web"
    server = XdsProcess(insecure=True)
    try:
        node = "mesh/shop/virtualNode/web"
        response, code, _ = open_insecure(
            server.ads, node, {"APPMESH_RESOURCE_ARN": arn.format("111111111111")}
        )
        assert code == grpc.StatusCode.OK and response.type_url == xds.CLUSTER
        response, code, _ = open_insecure(server.ads, node, {"meshplane.tenant": "acme"})
        assert code == grpc.StatusCode.OK

        _, code, details = open_insecure(server.ads, node, {})
        assert code == grpc.StatusCode.UNAUTHENTICATED and "APPMESH_RESOURCE_ARN" in details
        _, code, details = open_insecure(
            server.ads,
            "mesh/shop/virtualNode/db",
            {"APPMESH_RESOURCE_ARN": arn.format("111111111111")},
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED and "mesh/shop/virtualNode/db" in details
        _, code, details = open_insecure(
            server.ads, node, {"APPMESH_RESOURCE_ARN": arn.format("999999999999")}
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED and "999999999999" in details
        _, code, details = open_insecure(
            server.ads, node, {"meshplane.tenant": "acme", "consumer": "lua"}
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "node.metadata.consumer" in details
        _, code, details = open_insecure(
            server.ads, "mesh/shop/virtualNode/nosuch", {"meshplane.tenant": "acme"}
        )
        assert code == grpc.StatusCode.NOT_FOUND and "nosuch" in details
        assert "NO TLS, NO CLIENT AUTHENTICATION" in server.log()
    finally:
        server.stop()
