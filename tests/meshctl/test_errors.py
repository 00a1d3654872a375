"""What meshctl cannot translate stops the import before any write, naming file and resource."""

import json

import pytest

from tests.meshctl.conftest import FIXTURES

MESH_TF = 'resource "aws_appmesh_mesh" "shop" {\n  name = "shop"\n}\n'


def _node_tf(listener_extra: str = "", mesh_ref: str = "aws_appmesh_mesh.shop.name") -> str:
    return (
        MESH_TF
        + f"""
resource "aws_appmesh_virtual_node" "orders" {{
  name      = "orders"
  mesh_name = {mesh_ref}
  spec {{
    listener {{
      port_mapping {{
        port     = 8080
        protocol = "http"
      }}
      {listener_extra}
    }}
  }}
}}
"""
    )


CASES = {
    "unknown terraform field": (
        "main.tf",
        _node_tf("connection_limit = 5"),
        ["main.tf: aws_appmesh_virtual_node.orders", "spec.listener[0].connection_limit"],
    ),
    "unresolvable terraform reference": (
        "main.tf",
        _node_tf(mesh_ref="aws_appmesh_mesh.shop.arn"),
        ["main.tf: aws_appmesh_virtual_node.orders", "cannot resolve 'aws_appmesh_mesh.shop.arn'"],
    ),
    "terraform function call": (
        "main.tf",
        _node_tf(mesh_ref='lower("SHOP")'),
        ["main.tf", "line 7", "function calls"],
    ),
    "bad enum value": (
        "main.tf",
        _node_tf().replace('"http"', '"htp"'),
        ["aws_appmesh_virtual_node.orders", "'htp' is not one of"],
    ),
    "cloudformation Ref of an App Mesh resource": (
        "template.yaml",
        """
Resources:
  Mesh:
    Type: AWS::AppMesh::Mesh
    Properties: {MeshName: shop}
  Router:
    Type: AWS::AppMesh::VirtualRouter
    Properties:
      MeshName: !Ref Mesh
      VirtualRouterName: orders
      Spec:
        Listeners: [{PortMapping: {Port: 80, Protocol: http}}]
""",
        ["template.yaml: Router (AWS::AppMesh::VirtualRouter)", "Ref Mesh returns an ARN"],
    ),
    "kubernetes backendGroups": (
        "node.yaml",
        """
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: shop}
spec: {namespaceSelector: {matchLabels: {mesh: shop}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: orders, namespace: shop}
spec:
  listeners: [{portMapping: {port: 8080, protocol: http}}]
  backendGroups: [{name: "*"}]
""",
        ["node.yaml: VirtualNode shop/orders", "backendGroups"],
    ),
    "route to a node that exists nowhere": (
        "dump.json",
        json.dumps(
            [
                {"mesh": {"meshName": "shop", "spec": {}}},
                {
                    "virtualRouter": {
                        "meshName": "shop",
                        "virtualRouterName": "orders",
                        "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]},
                    }
                },
                {
                    "route": {
                        "meshName": "shop",
                        "virtualRouterName": "orders",
                        "routeName": "all",
                        "spec": {
                            "httpRoute": {
                                "match": {"prefix": "/"},
                                "action": {
                                    "weightedTargets": [{"virtualNode": "ghost", "weight": 1}]
                                },
                            }
                        },
                    }
                },
            ]
        ),
        ["dump.json[2]: route orders/all", "virtual node 'ghost'", "weightedTargets[0]"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_untranslatable_source_fails_and_writes_nothing(case, meshctl, alice, tmp_path):
    name, text, wanted = CASES[case]
    path = tmp_path / name
    path.write_text(text)

    result = meshctl("import", "appmesh", "--from", str(path))

    assert result.code == 1, result.out
    assert result.err.startswith("meshctl: error: ")
    for fragment in wanted:
        assert fragment in result.err
    assert alice.appmesh().list_meshes()["meshes"] == []


def test_missing_source_and_unknown_format_are_reported(meshctl, tmp_path):
    missing = meshctl("import", "appmesh", "--from", str(tmp_path / "nope.tf"))
    assert missing.code == 1
    assert "no such file or directory" in missing.err

    other = tmp_path / "notes.json"
    other.write_text('{"hello": "world"}')
    unknown = meshctl("import", "appmesh", "--from", str(other))
    assert unknown.code == 1
    assert "notes.json: not a recognised source" in unknown.err


def test_a_failed_import_leaves_earlier_resources_for_an_idempotent_rerun(meshctl, alice):
    """The API refusing one write (here: alice's quota) names the resource; a re-run after
    fixing the cause creates only what is missing."""
    from tenants.models import QuotaOverride

    QuotaOverride.objects.create(tenant=alice.tenant, name="virtual_nodes_per_mesh", limit=2)
    failed = meshctl("import", "appmesh", "--from", str(FIXTURES / "terraform"))
    assert failed.code == 1
    assert "aws_appmesh_virtual_node.catalog_v2" in failed.err
    QuotaOverride.objects.filter(tenant=alice.tenant).delete()

    rerun = meshctl("import", "appmesh", "--from", str(FIXTURES / "terraform"))
    assert rerun.code == 0, rerun.err
    assert "8 created, 0 updated, 3 unchanged" in rerun.out
