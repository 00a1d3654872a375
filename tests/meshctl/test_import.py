"""`meshctl import appmesh` from every source format into a live Meshplane tenant."""

import pytest

from tests.meshctl import expected
from tests.meshctl.conftest import FIXTURES

# name -> (path, App Mesh names, the format meshctl reports)
SOURCES = {
    "terraform-state": (FIXTURES / "terraform.tfstate", expected.SAME, "terraform-state"),
    "terraform-config": (FIXTURES / "terraform", expected.SAME, "terraform-config"),
    "cloudformation-yaml": (
        FIXTURES / "cloudformation" / "shop.yaml", expected.SAME, "cloudformation",
    ),
    "cloudformation-json": (
        FIXTURES / "cloudformation-json" / "shop.template.json", expected.SAME, "cloudformation",
    ),
    "kubernetes": (FIXTURES / "k8s", expected.KUBERNETES, "kubernetes"),
    "describe-dump": (FIXTURES / "describe", expected.SAME, "describe"),
}  # fmt: skip
TOTAL = len(expected.specs())


def _versions(client):
    nodes = client.list_virtual_nodes(meshName="shop")["virtualNodes"]
    return sorted((n["virtualNodeName"], n["version"]) for n in nodes)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_import_lands_the_mesh_and_a_rerun_changes_nothing(source, meshctl, alice):
    path, names, fmt = SOURCES[source]
    client = alice.appmesh()

    first = meshctl("import", "appmesh", "--from", str(path))

    assert first.code == 0, first.err
    assert f"from {path} ({fmt})" in first.out
    assert f"{TOTAL} created, 0 updated, 0 unchanged" in first.out
    assert expected.read_mesh(client) == expected.specs(names)
    if source not in ("describe-dump", "kubernetes"):  # neither format carries tags
        tags = client.list_tags_for_resource(
            resourceArn=client.describe_mesh(meshName="shop")["mesh"]["metadata"]["arn"]
        )["tags"]
        assert tags == [{"key": "team", "value": "shop"}]
    versions = _versions(client)

    again = meshctl("import", "appmesh", "--from", str(path))

    assert again.code == 0, again.err
    assert f"0 created, 0 updated, {TOTAL} unchanged" in again.out
    assert _versions(client) == versions


def test_resources_are_created_in_dependency_order(meshctl):
    result = meshctl("import", "appmesh", "--from", str(FIXTURES / "terraform"))

    assert result.code == 0, result.err
    kinds = [line.split()[2:4] for line in result.out.splitlines() if line.startswith("+ ")]
    order = [k[0] if k[0] in ("mesh", "route") else " ".join(k) for k in kinds]
    seen = list(dict.fromkeys(order))
    assert seen == [
        "mesh",
        "virtual node",
        "virtual router",
        "route",
        "virtual service",
        "virtual gateway",
        "gateway route",
    ]


def test_dry_run_prints_the_plan_and_writes_nothing(meshctl, alice):
    client = alice.appmesh()

    plan = meshctl("import", "appmesh", "--from", str(FIXTURES / "terraform"), "--dry-run")

    assert plan.code == 0, plan.err
    assert "+ create    virtual node shop/catalog-v1" in plan.out
    assert "+ create    route shop/catalog/catalog-split" in plan.out
    assert "dry run, nothing written" in plan.out
    assert f"total: {TOTAL} to create, 0 to update, 0 unchanged" in plan.out
    assert client.list_meshes()["meshes"] == []


def test_a_changed_resource_is_updated_back_and_dry_run_only_reports_it(meshctl, alice):
    client = alice.appmesh()
    assert meshctl("import", "appmesh", "--from", str(FIXTURES / "terraform.tfstate")).code == 0
    route = client.describe_route(
        meshName="shop", virtualRouterName="catalog", routeName="catalog-split"
    )["route"]
    drifted = route["spec"]
    drifted["httpRoute"]["action"]["weightedTargets"][0]["weight"] = 50
    drifted["httpRoute"]["action"]["weightedTargets"][1]["weight"] = 50
    client.update_route(
        meshName="shop", virtualRouterName="catalog", routeName="catalog-split", spec=drifted
    )

    plan = meshctl("import", "appmesh", "--from", str(FIXTURES / "terraform.tfstate"), "--dry-run")
    assert plan.code == 0, plan.err
    assert "~ update    route shop/catalog/catalog-split" in plan.out
    assert f"total: 0 to create, 1 to update, {TOTAL - 1} unchanged" in plan.out
    assert expected.read_mesh(client)[("route", "catalog", "catalog-split")] == drifted

    applied = meshctl("import", "appmesh", "--from", str(FIXTURES / "terraform.tfstate"))
    assert applied.code == 0, applied.err
    assert expected.read_mesh(client) == expected.specs()


def test_only_the_named_mesh_is_imported(meshctl, alice):
    result = meshctl("import", "appmesh", "--from", str(FIXTURES / "describe"), "--mesh", "other")

    assert result.code == 1
    assert "nothing in mesh 'other'" in result.err
    assert alice.appmesh().list_meshes()["meshes"] == []


def test_from_endpoint_copies_another_tenant(meshctl, alice, charlie, api_server):
    # charlie (tenant globex) holds the mesh, as the old App Mesh account did.
    seeded = meshctl("import", "appmesh", "--from", str(FIXTURES / "k8s"), profile="old")
    assert seeded.code == 0, seeded.err
    assert alice.appmesh().list_meshes()["meshes"] == []

    copied = meshctl(
        "import", "appmesh", "--from-endpoint", api_server.url, "--source-profile", "old",
    )  # fmt: skip

    assert copied.code == 0, copied.err
    assert f"{TOTAL} created" in copied.out
    assert expected.read_mesh(alice.appmesh()) == expected.specs(expected.KUBERNETES)
    assert expected.read_mesh(charlie.appmesh()) == expected.specs(expected.KUBERNETES)
    again = meshctl(
        "import", "appmesh", "--from-endpoint", api_server.url, "--source-profile", "old",
    )  # fmt: skip
    assert f"0 created, 0 updated, {TOTAL} unchanged" in again.out


def test_profile_services_section_sets_the_endpoint_and_var_overrides_a_default(
    meshctl, aws_profiles, api_server, alice
):
    config = aws_profiles["config"]
    config.write_text(
        config.read_text()
        + "\n[profile endpoint-in-profile]\nregion = us-east-1\nservices = local-meshplane\n"
        + f"\n[services local-meshplane]\napp_mesh =\n  endpoint_url = {api_server.url}\n"
    )
    credentials = aws_profiles["credentials"]
    credentials.write_text(
        credentials.read_text()
        + f"\n[endpoint-in-profile]\naws_access_key_id = {alice.key_id}\n"
        + f"aws_secret_access_key = {alice.secret}\n"
    )

    plan = meshctl(
        "import", "appmesh", "--from", str(FIXTURES / "terraform"), "--dry-run",
        "--var", "domain=shop.example", "--profile", "endpoint-in-profile", profile="",
    )  # fmt: skip

    assert plan.code == 0, plan.err
    assert "+ create    virtual service shop/catalog.shop.example" in plan.out
    assert "+ create    virtual service shop/frontend.shop.local" in plan.out
