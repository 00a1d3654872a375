"""The loader reads specs as text through a process-wide cache of parsed specs: what it
returns must be exactly what the plain specs give, and a changed spec is never served
from the cache."""

import pytest

from meshapi.models import (
    GatewayRoute,
    Mesh,
    Route,
    VirtualGateway,
    VirtualNode,
    VirtualRouter,
    VirtualService,
)
from meshapi.services import resources
from meshapi.services.kinds import VIRTUAL_NODE
from tenants.services import create_tenant
from tests.workers import meshes
from workers import loader
from workers.compiler import MeshContext

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def mesh(embedded):
    return meshes.shop(create_tenant("acme", "alice@example.com")[0])


def plain_inputs(loaded: loader.LoadedMesh) -> dict:
    """The same mesh read through the ORM as plain dicts (no cache involved)."""
    mesh_id = loaded.mesh_id

    def specs(model) -> dict:
        return dict(model.objects.filter(mesh_id=mesh_id).values_list("name", "spec"))

    def children(model, parent: str) -> dict:
        out: dict = {}
        rows = model.objects.filter(mesh_id=mesh_id).values_list(f"{parent}__name", "name", "spec")
        for parent_name, name, spec in rows:
            out.setdefault(parent_name, {})[name] = spec
        return out

    ctx = loaded.ctx
    return {
        "virtual_nodes": specs(VirtualNode),
        "virtual_services": specs(VirtualService),
        "virtual_routers": specs(VirtualRouter),
        "routes": children(Route, "virtual_router"),
        "virtual_gateways": specs(VirtualGateway),
        "gateway_routes": children(GatewayRoute, "virtual_gateway"),
        "endpoints": {key: list(items) for key, items in ctx.endpoints.items()},
        "trust_bundle": ctx.trust_bundle,
        "mtls_mode": ctx.mtls_mode,
        "trust_domain": ctx.trust_domain,
    }


def same_as_plain(loaded: loader.LoadedMesh) -> None:
    inputs = plain_inputs(loaded)
    spec = Mesh.objects.get(pk=loaded.mesh_id).spec
    assert loaded.fingerprint == loader.fingerprint(loaded.name, spec, **inputs)
    assert loaded.ctx == MeshContext.from_specs(loaded.name, spec, **inputs)


def test_a_load_equals_the_plain_specs_and_sees_every_change(mesh):
    first = loader.load(mesh.id)
    same_as_plain(first)
    again = loader.load(mesh.id)  # served from the cache this time
    assert again.fingerprint == first.fingerprint and again.ctx == first.ctx
    spec = {"listeners": [{"portMapping": {"port": 9090, "protocol": "http2"}}]}
    resources.update(
        mesh.tenant, VIRTUAL_NODE, meshes.WRITER, mesh_name="shop", name="catalog-v2", spec=spec
    )
    changed = loader.load(mesh.id)
    same_as_plain(changed)
    assert {k for k in changed.fingerprint if changed.fingerprint[k] != first.fingerprint[k]} == {
        "virtualNode catalog-v2"
    }
    assert changed.ctx.virtual_nodes["catalog-v2"]["listeners"][0]["portMapping"]["port"] == 9090
