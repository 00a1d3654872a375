"""Source readers without a server: formats and origins that the live tests do not cover."""

import json
import shutil

import pytest

from meshctl import sources
from meshctl.model import TranslateError
from tests.meshctl import expected
from tests.meshctl.conftest import FIXTURES


def _specs(resources) -> dict:
    return {(r.kind.key, r.parent or "", r.name): r.spec for r in resources}


def test_terraform_show_json_with_a_child_module(tmp_path):
    """`terraform show -json` output: resources in the root module and in child modules."""
    state = json.loads((FIXTURES / "terraform.tfstate").read_text())
    managed = [r for r in state["resources"] if r["mode"] == "managed"]

    def entry(r, module=""):
        address = f"{module}{r['type']}.{r['name']}"
        values = r["instances"][0]["attributes"]
        return {
            "address": address,
            "mode": "managed",
            "type": r["type"],
            "name": r["name"],
            "provider_name": "registry.terraform.io/hashicorp/aws",
            "values": values,
        }

    shown = {
        "format_version": "1.0",
        "terraform_version": "1.9.8",
        "values": {
            "root_module": {
                "resources": [entry(r) for r in managed[:4]],
                "child_modules": [
                    {
                        "address": "module.routing",
                        "resources": [entry(r, "module.routing.") for r in managed[4:]],
                    }
                ],
            }
        },
    }
    path = tmp_path / "show.json"
    path.write_text(json.dumps(shown))

    fmt, resources = sources.load(path)

    assert fmt == "terraform-state"
    assert _specs(resources) == expected.specs()
    assert any(
        r.origin.endswith("module.routing.aws_appmesh_route.catalog_split") for r in resources
    )


def test_state_instances_with_count_are_named_by_index(tmp_path):
    state = json.loads((FIXTURES / "terraform.tfstate").read_text())
    mesh = next(r for r in state["resources"] if r["type"] == "aws_appmesh_mesh")
    second = json.loads(json.dumps(mesh["instances"][0]))
    second["attributes"]["name"] = "shop-eu"
    mesh["instances"][0]["index_key"] = 0
    second["index_key"] = 1
    mesh["instances"].append(second)
    path = tmp_path / "terraform.tfstate"
    path.write_text(json.dumps({**state, "resources": [mesh]}))

    _, resources = sources.load(path)

    assert [(r.name, r.origin.rsplit(": ", 1)[1]) for r in resources] == [
        ("shop", "aws_appmesh_mesh.shop[0]"),
        ("shop-eu", "aws_appmesh_mesh.shop[1]"),
    ]


def test_kubernetes_mesh_membership_needs_a_hint_when_ambiguous(tmp_path):
    (tmp_path / "mesh.yaml").write_text(
        """
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: a}
spec: {}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: b}
spec: {}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: orders, namespace: shop}
spec:
  listeners: [{portMapping: {port: 8080, protocol: http}}]
"""
    )
    with pytest.raises(TranslateError, match="VirtualNode shop/orders: cannot tell its mesh"):
        sources.load(tmp_path)

    _, resources = sources.load(tmp_path, default_mesh="b")
    node = next(r for r in resources if r.kind.key == "virtualNode")
    assert (node.mesh, node.name) == ("b", "orders_shop")


def test_cloudformation_parameter_without_default_asks_for_a_value(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(
        "Parameters:\n  Name: {Type: String}\nResources:\n  M:\n    Type: AWS::AppMesh::Mesh\n"
        "    Properties:\n      MeshName: !Ref Name\n"
    )
    with pytest.raises(TranslateError, match=r"M \(AWS::AppMesh::Mesh\): parameter 'Name'.*--var"):
        sources.load(path)

    _, resources = sources.load(path, {"Name": "given"})
    assert [r.name for r in resources] == ["given"]


def test_a_terraform_directory_is_one_module_without_tool_state(tmp_path):
    shutil.copytree(FIXTURES / "terraform", tmp_path / "infra")
    for junk in (".terraform/modules/vpc/main.tf", "modules/child/main.tf"):
        (tmp_path / "infra" / junk).parent.mkdir(parents=True)
        (tmp_path / "infra" / junk).write_text("this is { not = the module we read\n")

    fmt, resources = sources.load(tmp_path / "infra")

    assert fmt == "terraform-config"
    assert _specs(resources) == expected.specs()
