"""The one secret the control plane serves: the mesh trust bundle (`meshplane:mesh-ca`),
over ADS, to a proxy whose TLS validation refers to it; a CA rotation pushes the new
bundle to the connected proxy."""

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from meshapi.models import Mesh
from tests.xds.conftest import needs_redis
from tests.xds.support import RawAdsClient, XdsProcess, wait_compiled, wait_for
from workers.compiler import xds

pytestmark = needs_redis

ARN = "arn:aws:appmesh:us-east-1:111111111111:mesh/shop/virtualNode/front"
MESH_CA = "meshplane:mesh-ca"


def served_bundle(proxy: RawAdsClient) -> str:
    response = proxy.last.get(xds.SECRET)
    if response is None or not response.resources:
        return ""
    secret = secret_pb2.Secret()
    response.resources[0].Unpack(secret)
    assert secret.name == MESH_CA
    return secret.validation_context.trusted_ca.inline_string


def test_the_mesh_trust_bundle_is_served_and_follows_a_rotation(alice, worker, api_server):
    from tenants.identity.services import ensure_mesh_ca, mesh_trust_bundle, rotate_mesh_ca

    client = alice.appmesh()
    client.create_mesh(meshName="shop")
    client.create_virtual_node(
        meshName="shop",
        virtualNodeName="back",
        spec={"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
    )
    client.create_virtual_service(
        meshName="shop",
        virtualServiceName="back.shop.local",
        spec={"provider": {"virtualNode": {"virtualNodeName": "back"}}},
    )
    arn = "arn:aws:acm-pca:us-east-1:111111111111:certificate-authority/mesh"
    client.create_virtual_node(
        meshName="shop",
        virtualNodeName="front",
        spec={
            "backends": [{"virtualService": {"virtualServiceName": "back.shop.local"}}],
            "backendDefaults": {
                "clientPolicy": {
                    "tls": {"validation": {"trust": {"acm": {"certificateAuthorityArns": [arn]}}}}
                }
            },
        },
    )
    mesh = Mesh.objects.get(tenant=alice.tenant, name="shop")
    ensure_mesh_ca(mesh)
    wait_compiled(alice.tenant, "shop")
    server = XdsProcess(insecure=True)
    proxy = RawAdsClient(
        server.ads,
        "mesh/shop/virtualNode/front",
        {"APPMESH_RESOURCE_ARN": ARN},
        {xds.CLUSTER: [], xds.SECRET: [MESH_CA]},
    )
    try:
        first = wait_for(lambda: served_bundle(proxy), message=server.log)
        assert first == mesh_trust_bundle(mesh.pk) and "BEGIN CERTIFICATE" in first

        rotate_mesh_ca(alice.tenant, "shop", actor="test")
        wait_compiled(alice.tenant, "shop")
        rotated = wait_for(
            lambda: (b := served_bundle(proxy)) != first and b,
            message="the rotated bundle was never pushed",
        )
        assert rotated == mesh_trust_bundle(mesh.pk)
        assert proxy.error is None
    finally:
        proxy.close()
        server.stop()
