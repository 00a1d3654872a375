"""Who may open an ADS stream (serve_xds over mTLS): the certificate from Join, for the
node.id it names. Everything else is refused at open, before any configuration is sent."""

import datetime

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from tests.support.live import free_port
from tests.xds.conftest import needs_redis
from tests.xds.support import (
    XdsProcess,
    join_certificate,
    proxy_detail,
    wait_compiled,
    wait_for,
)
from workers.compiler import xds

pytestmark = needs_redis

SOTW = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


@pytest.fixture
def xds_server(api_server, worker):
    server = XdsProcess(join_port=free_port())
    yield server
    server.stop()


def build(persona) -> None:
    client = persona.appmesh()
    client.create_mesh(meshName="shop")
    client.create_virtual_node(
        meshName="shop",
        virtualNodeName="web",
        spec={"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
    )
    client.create_virtual_node(meshName="shop", virtualNodeName="other", spec={})
    wait_compiled(persona.tenant, "shop")


def open_stream(
    ads: str, server_ca: bytes, key: bytes, chain: bytes, node_id: str, instance_id: str = "probe"
):
    """Open a SotW stream, ask for clusters; (first response or None, status code, details)."""
    credentials = grpc.ssl_channel_credentials(server_ca, key, chain)
    with grpc.secure_channel(ads, credentials) as channel:
        call = channel.stream_stream(
            SOTW,
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )
        metadata = struct_pb2.Struct()
        metadata.update({"instance_id": instance_id})
        request = discovery_pb2.DiscoveryRequest(type_url=xds.CLUSTER)
        request.node.id = node_id
        request.node.metadata.CopyFrom(metadata)
        responses = call(iter([request]), timeout=10)
        try:
            for response in responses:
                return response, grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            return None, exc.code(), exc.details() or ""
        return None, grpc.StatusCode.OK, ""


def forged(signer_cert_pem: str, signer_key, sid: str, *, days: tuple[int, int]) -> tuple:
    """A leaf for `sid` signed by the given CA, valid from days[0] to days[1] from now."""
    from tenants.identity import pki

    ca = x509.load_pem_x509_certificate(signer_cert_pem.encode())
    key = pki.new_ec_key()
    now = datetime.datetime.now(datetime.UTC)
    leaf = pki.leaf(
        ca,
        signer_key,
        key.public_key(),
        not_before=now + datetime.timedelta(days=days[0]),
        not_after=now + datetime.timedelta(days=days[1]),
        uris=(sid,),
        common_name="forged",
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, pki.cert_pem(leaf).encode()


def mesh_ca(tenant, mesh: str):
    from meshapi.models import Mesh
    from tenants import crypto
    from tenants.identity import pki
    from tenants.identity.services import ensure_mesh_ca

    ca = ensure_mesh_ca(Mesh.objects.get(tenant=tenant, name=mesh))
    return ca.certificate_pem, pki.load_key(crypto.decrypt(ca.key_encrypted))


def test_the_certificate_decides_the_tenant_and_must_name_the_node(
    alice, charlie, xds_server, tmp_path
):
    build(alice)
    build(charlie)  # the same mesh and node names in another tenant
    web = join_certificate(alice.tenant, "shop", "virtualNode", "web", xds_server.join, tmp_path)
    ca = web.server_ca.read_bytes()
    key, chain = web.key.read_bytes(), web.chain.read_bytes()

    response, code, _ = open_stream(xds_server.ads, ca, key, chain, "mesh/shop/virtualNode/web")
    assert code == grpc.StatusCode.OK and response is not None
    assert response.type_url == xds.CLUSTER

    # The certificate is web's: claiming another node is refused.
    response, code, details = open_stream(
        xds_server.ads, ca, key, chain, "mesh/shop/virtualNode/other"
    )
    assert response is None and code == grpc.StatusCode.PERMISSION_DENIED
    assert web.spiffe_id in details and "mesh/shop/virtualNode/other" in details

    # A leaf claiming acme's trust domain, signed by globex's own (trusted) mesh CA.
    globex_cert, globex_key = mesh_ca(charlie.tenant, "shop")
    key2, chain2 = forged(globex_cert, globex_key, web.spiffe_id, days=(-1, 1))
    # The server reloads its trust roots (now with globex's new CA) within a second.
    response, code, details = wait_for(
        lambda: (
            (r := open_stream(xds_server.ads, ca, key2, chain2, "mesh/shop/virtualNode/web"))[1]
            != grpc.StatusCode.UNAVAILABLE
            and r
        ),
        message="globex's CA never reached the server's trust roots",
    )
    assert response is None and code == grpc.StatusCode.UNAUTHENTICATED
    assert "not signed by a CA of mesh 'shop'" in details


def test_unknown_ca_and_expired_certificates_never_get_a_stream(alice, xds_server, tmp_path):
    from tenants.identity import pki

    build(alice)
    web = join_certificate(alice.tenant, "shop", "virtualNode", "web", xds_server.join, tmp_path)
    ca = web.server_ca.read_bytes()
    node_id = "mesh/shop/virtualNode/web"

    stranger_key = pki.new_ec_key()
    stranger = pki.self_signed_ca(
        stranger_key,
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "stranger")]),
        datetime.datetime.now(datetime.UTC),
    )
    key, chain = forged(pki.cert_pem(stranger), stranger_key, web.spiffe_id, days=(-1, 1))
    response, code, _ = open_stream(xds_server.ads, ca, key, chain, node_id)
    assert response is None and code == grpc.StatusCode.UNAVAILABLE  # refused in the handshake

    acme_cert, acme_key = mesh_ca(alice.tenant, "shop")
    key, chain = forged(acme_cert, acme_key, web.spiffe_id, days=(-3, -1))
    response, code, _ = open_stream(xds_server.ads, ca, key, chain, node_id)
    assert response is None and code == grpc.StatusCode.UNAVAILABLE

    # No client certificate at all.
    with grpc.secure_channel(xds_server.ads, grpc.ssl_channel_credentials(ca)) as channel:
        call = channel.stream_stream(SOTW)
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(call(iter([b""]), timeout=10)))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_join_and_mtls_streams_are_served_by_every_replica_process(
    alice, api_server, worker, tmp_path
):
    """serve_xds --processes 2: the Join port and the mTLS ADS port are both shared through
    SO_REUSEPORT, so each new connection lands on either process, and both serve it."""
    build(alice)
    server = XdsProcess(join_port=free_port(), processes=2)
    try:
        for i in range(16):  # all on one process by chance: 1 in 2**15
            web = join_certificate(
                alice.tenant, "shop", "virtualNode", "web", server.join, tmp_path / str(i)
            )
            response, code, details = open_stream(
                server.ads,
                web.server_ca.read_bytes(),
                web.key.read_bytes(),
                web.chain.read_bytes(),
                "mesh/shop/virtualNode/web",
                instance_id=f"web-{i}",
            )
            assert code == grpc.StatusCode.OK and response is not None, details
        instances = proxy_detail(alice, "shop", "virtualNode", "web")["instances"]
        assert {i["instanceId"] for i in instances} >= {f"web-{i}" for i in range(16)}
        assert {i["replica"] for i in instances} == {"r1-1", "r1-2"}
    finally:
        server.stop()
