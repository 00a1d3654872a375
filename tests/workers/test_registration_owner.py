"""A registered endpoint belongs to the instance that registered it last: an older
instance's late deregistration (its grace period ran out after a new instance took the
same address and port) leaves the new instance's endpoint in place."""

import pytest

from meshapi.models import Endpoint
from meshapi.services import endpoints, resources
from meshapi.services.kinds import MESH, VIRTUAL_NODE
from tenants.services import create_tenant

pytestmark = pytest.mark.django_db

NODE_SPEC = {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}


def _node(tenant):
    writer = resources.Writer(actor="test")
    resources.create(tenant, MESH, writer, mesh_name="m", name="m", spec={})
    resources.create(tenant, VIRTUAL_NODE, writer, mesh_name="m", name="cart", spec=NODE_SPEC)


def _registered():
    return sorted(
        Endpoint.objects.filter(source=Endpoint.Source.REGISTERED).values_list(
            "address", "port", "target_port", "instance_id"
        )
    )


def test_old_instance_deregistration_keeps_the_new_instances_endpoint():
    tenant = create_tenant("acme", "alice@example.com")[0]
    _node(tenant)
    where = {"mesh_name": "m", "node_name": "cart", "port": 8080, "address": "10.0.0.7"}
    endpoints.register(tenant, **where, instance_id="old")
    endpoints.register(tenant, **where, instance_id="new")
    assert _registered() == [("10.0.0.7", 8080, 8080, "new")]

    assert endpoints.deregister(tenant, **where, instance_id="old") is False
    assert _registered() == [("10.0.0.7", 8080, 8080, "new")]

    assert endpoints.deregister(tenant, **where, instance_id="new") is True
    assert _registered() == []
