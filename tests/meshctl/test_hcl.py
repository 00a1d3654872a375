"""The HCL reader/writer and the Terraform name mapping, without a server."""

import os
import shutil
import subprocess

import pytest

from meshctl import export, hcl
from meshctl.model import Resource, TranslateError
from meshctl.shapes import TERRAFORM_LIST_BLOCKS, camel_to_snake, shape, spec_to_api, terraform_name
from meshctl.sources import terraform
from tests.meshctl.conftest import FIXTURES


def _value(text: str) -> dict:
    body = hcl.parse(text)
    return hcl.body_value(body, lambda ref: f"<{ref}>")


def test_reads_blocks_attributes_lists_objects_and_templates():
    got = _value(
        """
        # comment
        a = "x${var.y}z" // trailing
        b = [1, 2.5, true, null,
             "s"]
        /* block
           comment */
        c = { k = "v", "quoted key" = -3 }
        d = <<-EOT
          line one
            line two
        EOT
        blk "label" {
          inner = "\\"esc\\" $${literal}"
          nested { n = 1 }
        }
        blk "label2" {}
        """
    )
    assert got == {
        "a": "x<var.y>z",
        "b": [1, 2.5, True, None, "s"],
        "c": {"k": "v", "quoted key": -3},
        "d": "line one\n  line two\n",
        "blk": [{"inner": '"esc" ${literal}', "nested": [{"n": 1}]}, {}],
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('a = upper("x")\n', "line 1: function calls"),
        ("a = 1\nb = [1 2]\n", "line 2: expected ','"),
        ('a = "open\n', "line 1: unterminated string"),
        ("a = 1 + 2\n", "operators"),
        ("x {\n  a = 1\n", "expected an attribute or block"),
    ],
)
def test_syntax_errors_name_the_line(text, message):
    with pytest.raises(hcl.HclError) as exc:
        hcl.parse(text)
    assert message in str(exc.value)


def test_writer_output_parses_back_to_the_same_value():
    value = {"s": 'q"uote ${not} %{x}\n', "n": 3, "f": 1.5, "b": False, "l": ["a", 1], "m": {}}
    block = hcl.Block("r", ["t", "n"], [hcl.Attribute(k, v) for k, v in value.items()])
    parsed = hcl.parse(hcl.render_block(block))
    assert hcl.body_value(parsed[0].body, lambda ref: None) == value


def test_terraform_names_follow_the_aws_provider():
    assert camel_to_snake("http2Route") == "http2_route"
    assert camel_to_snake("awsCloudMap") == "aws_cloud_map"
    assert camel_to_snake("certificateAuthorityArns") == "certificate_authority_arns"
    assert {terraform_name(k) for k in TERRAFORM_LIST_BLOCKS} == {
        "listener", "backend", "weighted_target", "header", "query_parameter",
    }  # fmt: skip
    # Every renamed list exists in the App Mesh model: the table cannot drift unnoticed.
    route = shape("HttpRouteMatch")
    assert "headers" in route.members and "queryParameters" in route.members


def test_state_zero_values_are_dropped_but_a_zero_weight_is_kept():
    spec = spec_to_api(
        "RouteSpec",
        [
            {
                "priority": 0,
                "http_route": [
                    {
                        "match": [{"prefix": "/", "method": "", "port": 0, "header": []}],
                        "action": [{"weighted_target": [{"virtual_node": "a", "weight": 0}]}],
                        "retry_policy": [],
                    }
                ],
                "tcp_route": [],
            }
        ],
        "spec",
        "terraform",
    )
    assert spec == {
        "httpRoute": {
            "match": {"prefix": "/"},
            "action": {"weightedTargets": [{"virtualNode": "a", "weight": 0}]},
        }
    }


def test_a_reference_cycle_is_reported_not_followed():
    text = """
    resource "aws_appmesh_mesh" "a" {
      name = aws_appmesh_mesh.b.name
    }
    resource "aws_appmesh_mesh" "b" {
      name = aws_appmesh_mesh.a.name
    }
    """
    with pytest.raises(TranslateError, match="refers to itself"):
        terraform.from_text(text, "loop.tf")


def test_export_labels_are_unique_and_valid():
    resources = [
        Resource(export.MESH, "m", "m", {}),
        Resource(export.VIRTUAL_NODE, "m", "a.b", {}),
        Resource(export.VIRTUAL_NODE, "m", "a_b", {}),
        Resource(export.VIRTUAL_NODE, "m", "1st", {}),
    ]
    text = export.to_terraform(resources)
    assert 'resource "meshplane_virtual_node" "a_b" {' in text
    assert 'resource "meshplane_virtual_node" "a_b_2" {' in text
    assert 'resource "meshplane_virtual_node" "_1st" {' in text
    names = sorted(r.name for r in terraform.from_text(text))
    assert names == ["1st", "a.b", "a_b", "m"]


def test_export_is_what_terraform_fmt_writes(tmp_path):
    """A real Terraform parses the export (escapes included) and would not reformat it."""
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("no terraform on PATH")
    resources = terraform.from_config([FIXTURES / "terraform" / "main.tf"])
    odd = Resource(export.VIRTUAL_NODE, "shop", "odd", {
        "serviceDiscovery": {"dns": {"hostname": 'a"b.${x}.%{y}\\z'}},
        "logging": {"accessLog": {"file": {"path": "/var/log/${HOST}/access.log"}}},
    })  # fmt: skip
    path = tmp_path / "shop.tf"
    path.write_text(export.to_terraform([*resources, odd]))

    done = subprocess.run(
        [binary, "fmt", "-check", "-diff", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CHECKPOINT_DISABLE": "1", "TF_CLI_CONFIG_FILE": os.devnull},
    )

    assert done.returncode == 0, done.stdout + done.stderr
    read_back = {r.name: r.spec for r in terraform.from_config([path])}
    assert read_back["odd"] == odd.spec
