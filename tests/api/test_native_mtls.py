"""A mesh's automatic mTLS policy on the native API (/api/v1/meshes/<mesh>/mtls), held to
the endpoint contract, and what it does to the proxies: STRICT recompiles every proxy of
the mesh into mTLS + RBAC, and a caller's new backend recompiles the callee it now reaches."""

import pytest
import requests

from meshapi.models import Mesh
from meshapi.services import mtls as mtls_service
from meshapi.services import proxies as store
from meshapi.services import resources
from meshapi.services.kinds import VIRTUAL_NODE
from tenants.models import AuditEvent
from tests.support.endpoints import Call, EndpointContract
from tests.support.endpoints import Endpoint as ApiEndpoint
from tests.workers import meshes
from workers.pipeline import run_compile

V = "/api/v1"
M = "alicemesh"
MTLS = f"{V}/meshes/{M}/mtls"
SPIFFE = "spiffe://111111111111.meshplane.local/mesh/alicemesh"


def build_world(alice) -> dict:
    mesh = meshes.shop(alice.tenant, M, eds=True)
    run_compile(mesh.id)
    return {"alice_marker": "alice", "mesh_id": mesh.id}


def _disabled(world, body):
    assert body == {"meshName": M, "mode": "DISABLED"}, body


def _strict(world, body):
    assert body == {"meshName": M, "mode": "STRICT"}, body


def E(id_, method, write=False, **kw) -> ApiEndpoint:  # noqa: N802 - a table row
    body = kw.pop("body", None)
    return ApiEndpoint(f"native {id_}", "native", write, lambda w: Call(method, MTLS, body), **kw)


ENDPOINTS = [
    E("GetMeshMtls", "GET", check=_disabled),
    E("UpdateMeshMtls", "PUT", True, body={"mode": "STRICT"}, check=_strict),
]


class TestNativeMtlsEndpoints(EndpointContract):
    ENDPOINTS = ENDPOINTS

    @pytest.fixture
    def world(self, alice):
        return build_world(alice)


# ---------------------------------------------------------------- behaviour


@pytest.fixture
def world(alice):
    return build_world(alice)


def put(persona, body, path=MTLS):
    return requests.put(persona.base_url + path, json=body, headers=persona.bearer, timeout=30)


def get(persona, path):
    return requests.get(persona.base_url + path, headers=persona.bearer, timeout=30)


def versions(mesh_id: int) -> dict[tuple, str]:
    configs = store.stored_configs(mesh_id)
    return {key: row.current.version for key, row in configs.items() if row.current}


def test_a_mode_change_bumps_the_revision_and_is_audited_once(alice, world):
    revision = Mesh.objects.get(pk=world["mesh_id"]).revision
    assert put(alice, {"mode": "PERMISSIVE"}).json()["mode"] == "PERMISSIVE"
    assert get(alice, MTLS).json() == {"meshName": M, "mode": "PERMISSIVE"}
    changed = Mesh.objects.get(pk=world["mesh_id"]).revision
    assert changed > revision  # (making the mesh CA on the way bumps it too)
    # The same mode again changes nothing: no revision, no audit event.
    assert put(alice, {"mode": "PERMISSIVE"}).status_code == 200
    assert Mesh.objects.get(pk=world["mesh_id"]).revision == changed
    events = AuditEvent.objects.filter(tenant=alice.tenant, action="UpdateMeshMtls")
    assert [(e.before, e.after, e.actor) for e in events] == [
        ({"mode": "DISABLED"}, {"mode": "PERMISSIVE"}, f"alice@example.com ({alice.key_id})")
    ]
    assert events[0].resource_arn.endswith(f":mesh/{M}")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"mode": "ON"}, "mode"),
        ({"mode": "strict"}, "mode"),
        ({}, "mode"),
        ({"mode": "STRICT", "scope": "all"}, "scope"),
    ],
)
def test_bad_input_answers_400_naming_the_field_and_changes_nothing(alice, world, body, field):
    revision = Mesh.objects.get(pk=world["mesh_id"]).revision
    response = put(alice, body)
    assert response.status_code == 400, response.text
    assert field in response.json(), response.text
    mesh = Mesh.objects.get(pk=world["mesh_id"])
    assert (mesh.mtls_mode, mesh.revision) == ("DISABLED", revision)


def test_unknown_mesh_answers_404(alice, world):
    for response in (
        get(alice, f"{V}/meshes/nosuch/mtls"),
        put(alice, {"mode": "STRICT"}, f"{V}/meshes/nosuch/mtls"),
    ):
        assert response.status_code == 404, response.text
        assert "Mesh 'nosuch' not found." in response.text


def test_the_service_refuses_a_bad_mode_naming_it(alice, world):
    with pytest.raises(mtls_service.MtlsError) as caught:
        mtls_service.set_policy(alice.tenant, meshes.WRITER, mesh_name=M, mode="ON")
    assert caught.value.field == "mode" and "'ON'" in caught.value.message


def test_strict_gives_every_proxy_of_the_mesh_a_new_version_with_mtls_and_rbac(alice, world):
    before = versions(world["mesh_id"])
    assert put(alice, {"mode": "STRICT"}).status_code == 200
    run_compile(world["mesh_id"])
    after = versions(world["mesh_id"])
    assert set(after) == set(before) and len(before) == 4
    assert all(after[key] != before[key] for key in before), (before, after)

    config = get(alice, f"{V}/meshes/{M}/proxies/virtualNode/catalog-v1/config").json()
    # The mesh CA was made with the policy: its bundle is served from the first push.
    assert [s["name"] for s in config["secrets"]] == ["meshplane:mesh-ca"], config["secrets"]
    assert "BEGIN CERTIFICATE" in str(config["secrets"])
    (ingress,) = [x for x in config["listeners"] if x["name"] == "ingress"]
    (chain,) = ingress["filter_chains"]  # STRICT: no plaintext chain
    tls = chain["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    assert tls["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["name"] == (
        "meshplane:identity"
    )
    assert f"{SPIFFE}/virtualNode/frontend" in str(chain)
    assert f"{SPIFFE}/virtualGateway/shop-gateway" not in str(chain)  # routes to frontend only

    frontend = get(alice, f"{V}/meshes/{M}/proxies/virtualNode/frontend/config").json()
    (cluster,) = [c for c in frontend["clusters"] if c["name"] == "upstream/catalog-v1/8080"]
    assert f"{SPIFFE}/virtualNode/catalog-v1" in str(cluster["transport_socket"])


def test_a_new_backend_on_a_caller_recompiles_the_callee(alice, world):
    put(alice, {"mode": "STRICT"})
    run_compile(world["mesh_id"])
    before = versions(world["mesh_id"])
    spec = {
        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
        "backends": [{"virtualService": {"virtualServiceName": "catalog.shop.local"}}],
    }
    resources.create(
        alice.tenant, VIRTUAL_NODE, meshes.WRITER, mesh_name=M, name="reporting", spec=spec
    )
    run_compile(world["mesh_id"])
    after = versions(world["mesh_id"])
    changed = {key[1] for key in after if after[key] != before.get(key)}
    # The new caller itself, and the two nodes the catalog router sends it to.
    assert changed == {"reporting", "catalog-v1", "catalog-v2"}, changed
    config = get(alice, f"{V}/meshes/{M}/proxies/virtualNode/catalog-v2/config").text
    assert f"{SPIFFE}/virtualNode/reporting" in config


def test_a_callers_other_changes_leave_the_callees_alone(alice, world):
    put(alice, {"mode": "STRICT"})
    run_compile(world["mesh_id"])
    before = versions(world["mesh_id"])
    spec = resources.describe(alice.tenant, VIRTUAL_NODE, M, "frontend")["spec"]
    spec["listeners"][0]["timeout"] = {"http": {"idle": {"unit": "s", "value": 30}}}
    resources.update(
        alice.tenant, VIRTUAL_NODE, meshes.WRITER, mesh_name=M, name="frontend", spec=spec
    )
    result = run_compile(world["mesh_id"])
    after = versions(world["mesh_id"])
    # frontend's own listener changed; catalog-v1/v2 admit frontend as before and are not
    # even recompiled: they depend on frontend's backends, not on the rest of its spec.
    assert {key[1] for key in after if after[key] != before[key]} == {"frontend"}
    assert {key[1] for key in result.compiled} == {"frontend", "shop-gateway"}
