"""The provider under a real Terraform CLI, against the live server: the whole lifecycle of
the complete example mesh (all seven resource types), as a user would run it."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.terraform.support import EXAMPLES, Terraform, terraform_binaries

pytestmark = pytest.mark.e2e

BINARIES = terraform_binaries()

# Every managed resource of the example, with its import id.
IMPORTS = {
    "meshplane_mesh.shop": "shop",
    'meshplane_virtual_node.catalog["stable"]': "shop/catalog-v1",
    'meshplane_virtual_node.catalog["canary"]': "shop/catalog-v2",
    "meshplane_virtual_node.orders": "shop/orders",
    "meshplane_virtual_router.catalog": "shop/catalog",
    "meshplane_route.catalog": "shop/catalog/catalog",
    "meshplane_virtual_service.catalog": "shop/catalog.shop.local",
    "meshplane_virtual_service.orders": "shop/orders.shop.local",
    "meshplane_virtual_gateway.ingress": "shop/ingress",
    "meshplane_gateway_route.orders": "shop/ingress/orders",
    "meshplane_gateway_route.catalog": "shop/ingress/catalog",
}


@pytest.fixture(params=[path for _, path in BINARIES], ids=[label for label, _ in BINARIES])
def tf(request, alice, api_server, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(EXAMPLES / "meshplane", work)
    return Terraform(request.param, work, api_server.url, alice.key_id, alice.secret)


def _edit(tf: Terraform, old: str, new: str) -> None:
    main = tf.workdir / "main.tf"
    text = main.read_text()
    assert text.count(old) == 1, f"{old!r} should appear once in the example"
    main.write_text(text.replace(old, new))


def _orders_health(appmesh) -> dict:
    node = appmesh.describe_virtual_node(meshName="shop", virtualNodeName="orders")
    return node["virtualNode"]["spec"]["listeners"][0]["healthCheck"]


def test_example_lifecycle_plan_apply_drift_import_destroy(tf, alice):
    appmesh = alice.appmesh()

    # plan -> apply: everything is created as written.
    plan = tf.run("plan", "-input=false", "-out=create.tfplan")
    assert "11 to add, 0 to change, 0 to destroy" in plan.out
    tf.run("apply", "-input=false", "create.tfplan")
    route = appmesh.describe_route(
        meshName="shop", virtualRouterName="catalog", routeName="catalog"
    )["route"]
    weights = {
        t["virtualNode"]: t["weight"]
        for t in route["spec"]["httpRoute"]["action"]["weightedTargets"]
    }
    assert weights == {"catalog-v1": 90, "catalog-v2": 10}
    assert route["spec"]["httpRoute"]["retryPolicy"]["maxRetries"] == 2
    assert appmesh.list_tags_for_resource(resourceArn=route["metadata"]["arn"])["tags"] == []
    mesh = appmesh.describe_mesh(meshName="shop")["mesh"]
    assert appmesh.list_tags_for_resource(resourceArn=mesh["metadata"]["arn"])["tags"] == [
        {"key": "team", "value": "platform"}
    ]
    assert tf.outputs() == {"catalog_canary_weight": 10, "mesh_arn": mesh["metadata"]["arn"]}

    # A second plan has nothing to do.
    assert tf.plan_exitcode().rc == 0

    # A field three levels into the spec: an in-place update of that one resource.
    _edit(tf, "interval_millis     = 10000", "interval_millis     = 15000")
    plan = tf.plan_exitcode()
    assert plan.rc == 2
    assert "0 to add, 1 to change, 0 to destroy" in plan.out
    assert "meshplane_virtual_node.orders will be updated in-place" in plan.out
    assert re.search(r"~ interval_millis\s+= 10000 -> 15000", plan.out), plan.out
    tf.run("apply", "-input=false", "-auto-approve")
    assert _orders_health(appmesh)["intervalMillis"] == 15000
    assert tf.plan_exitcode().rc == 0

    # Changed outside Terraform: the next plan shows the drift, apply puts it back.
    node = appmesh.describe_virtual_node(meshName="shop", virtualNodeName="orders")["virtualNode"]
    spec = node["spec"]
    spec["listeners"][0]["healthCheck"]["intervalMillis"] = 20000
    spec["listeners"][0]["timeout"]["http"]["idle"]["value"] = 30
    appmesh.update_virtual_node(meshName="shop", virtualNodeName="orders", spec=spec)
    plan = tf.plan_exitcode()
    assert plan.rc == 2
    assert "0 to add, 1 to change, 0 to destroy" in plan.out
    assert re.search(r"~ interval_millis\s+= 20000 -> 15000", plan.out), plan.out
    assert re.search(r"~ value\s+= 30 -> 300", plan.out), plan.out
    tf.run("apply", "-input=false", "-auto-approve")
    health = _orders_health(appmesh)
    assert health["intervalMillis"] == 15000
    assert tf.plan_exitcode().rc == 0

    # Forget everything, import it back by id: the plan is clean again.
    tf.run("state", "rm", *IMPORTS)
    listed = tf.run("state", "list").out.split()
    assert [a for a in listed if not a.startswith("data.")] == []
    for address, import_id in IMPORTS.items():
        tf.run("import", "-input=false", address, import_id)
    plan = tf.plan_exitcode()
    assert plan.rc == 0, plan.out

    # destroy leaves nothing behind.
    tf.run("destroy", "-input=false", "-auto-approve")
    assert appmesh.list_meshes()["meshes"] == []
