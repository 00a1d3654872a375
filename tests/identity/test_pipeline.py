"""A CA rotation reaches proxies: the mesh recompiles and the `meshplane:mesh-ca` SDS
secret (what Envoy validates peers against) carries the new trust bundle."""

import pytest
from cryptography import x509

from meshapi.models import Mesh, ProxyConfig
from meshapi.services import proxies as store
from meshapi.services import resources
from meshapi.services.kinds import MESH, VIRTUAL_NODE, VIRTUAL_SERVICE
from tenants.identity import services as identity
from tenants.services import create_tenant
from tests.identity.conftest import WRITER, key_and_csr
from workers.pipeline import run_compile

pytestmark = pytest.mark.django_db(transaction=True)

ACM = {"acm": {"certificateAuthorityArns": ["arn:aws:acm-pca:us-east-1:1:certificate-authority/x"]}}
LISTENERS = [{"portMapping": {"port": 8080, "protocol": "http"}}]


@pytest.fixture
def embedded(settings):
    """Publish in-process: no Redis needed for this test's compiles."""
    settings.REDIS_URL = ""


def _mesh(tenant) -> Mesh:
    resources.create(tenant, MESH, WRITER, mesh_name="shop", name="shop", spec={})
    catalog = {"listeners": LISTENERS, "serviceDiscovery": {"dns": {"hostname": "catalog.local"}}}
    resources.create(tenant, VIRTUAL_NODE, WRITER, mesh_name="shop", name="catalog", spec=catalog)
    provider = {"provider": {"virtualNode": {"virtualNodeName": "catalog"}}}
    resources.create(
        tenant, VIRTUAL_SERVICE, WRITER, mesh_name="shop", name="catalog.local", spec=provider
    )
    # App Mesh's ACM trust on the caller maps to the mesh CA secret the control plane serves.
    frontend = {
        "listeners": LISTENERS,
        "serviceDiscovery": {"dns": {"hostname": "frontend.local"}},
        "backendDefaults": {"clientPolicy": {"tls": {"validation": {"trust": ACM}}}},
        "backends": [{"virtualService": {"virtualServiceName": "catalog.local"}}],
    }
    resources.create(tenant, VIRTUAL_NODE, WRITER, mesh_name="shop", name="frontend", spec=frontend)
    return Mesh.objects.get(tenant=tenant, name="shop")


def _mesh_ca_secret(mesh: Mesh) -> list[x509.Certificate]:
    config = ProxyConfig.objects.get(
        mesh=mesh, kind="virtualNode", name="frontend", consumer="envoy", interception="redirect"
    )
    secrets = store.resources_json(mesh.pk, config.current)["secrets"]
    [secret] = [s for s in secrets if s["name"] == "meshplane:mesh-ca"]
    pem = secret["validation_context"]["trusted_ca"]["inline_string"]
    return x509.load_pem_x509_certificates(pem.encode())


def test_rotation_recompiles_the_mesh_ca_secret(embedded):
    tenant, _ = create_tenant("acme", "alice@example.com", account_id="111111111111")
    mesh = _mesh(tenant)
    token = identity.create_join_token(
        tenant, "shop", kind="virtualNode", node_name="frontend", actor="t"
    ).secret
    identity.join(token, key_and_csr()[1])  # creates the mesh CA: the mesh recompiles
    run_compile(mesh.pk)
    first = _mesh_ca_secret(mesh)
    assert len(first) == 1

    identity.rotate_mesh_ca(tenant, "shop", actor="t")
    run_compile(mesh.pk)
    after = _mesh_ca_secret(mesh)
    assert len(after) == 2 and after[0] == first[0]  # the old root stays while its leaf lives
    bundle = identity.mesh_trust_bundle(mesh).encode()
    assert after == x509.load_pem_x509_certificates(bundle)
