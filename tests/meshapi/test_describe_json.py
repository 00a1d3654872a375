"""The hand-written describe query answers exactly what the ORM path renders."""

import json

import pytest

from meshapi.appmesh.errors import NotFound
from meshapi.services import resources
from meshapi.services.kinds import (
    GATEWAY_ROUTE,
    MESH,
    ROUTE,
    VIRTUAL_GATEWAY,
    VIRTUAL_NODE,
    VIRTUAL_ROUTER,
    VIRTUAL_SERVICE,
)
from tenants.services import create_tenant
from tests.api.test_appmesh_endpoints import (
    GW_ROUTE_SPEC,
    GW_SPEC,
    HTTP_LISTENER,
    NODE_SPEC,
    ROUTE_SPEC,
    SERVICE_SPEC,
)

CASES = [
    (MESH, "m", "", {"egressFilter": {"type": "ALLOW_ALL"}}),
    (VIRTUAL_NODE, "n", "", NODE_SPEC),
    (VIRTUAL_SERVICE, "s.local", "", SERVICE_SPEC),
    (VIRTUAL_ROUTER, "r", "", {"listeners": HTTP_LISTENER}),
    (ROUTE, "rt", "r", ROUTE_SPEC),
    (VIRTUAL_GATEWAY, "g", "", GW_SPEC),
    (GATEWAY_ROUTE, "gr", "g", GW_ROUTE_SPEC),
]


@pytest.fixture
def tenant(db):
    tenant, _ = create_tenant("acme", "alice@example.com")
    writer = resources.Writer("test")
    for kind, name, parent, spec in CASES:
        resources.create(
            tenant, kind, writer, mesh_name="m", name=name, spec=spec, parent_name=parent
        )
    # Version 2 for one of them, so lastUpdatedAt differs from createdAt.
    resources.update(tenant, VIRTUAL_NODE, writer, mesh_name="m", name="n", spec=NODE_SPEC)
    return tenant


@pytest.mark.parametrize(("kind", "name", "parent", "spec"), CASES, ids=[c[0].key for c in CASES])
def test_describe_json_equals_render(tenant, kind, name, parent, spec):
    fast = json.loads(resources.describe_json(tenant, kind, "m", name, parent))
    assert fast == resources.describe(tenant, kind, "m", name, parent)
    assert fast["spec"] == resources._normalise_spec(kind, spec)


def test_describe_json_not_found_names_what_is_missing(tenant):
    with pytest.raises(NotFound, match="Virtual router 'nope' not found"):
        resources.describe_json(tenant, ROUTE, "m", "rt", "nope")
    with pytest.raises(NotFound, match="Mesh 'other' not found"):
        resources.describe_json(tenant, VIRTUAL_NODE, "other", "n")
