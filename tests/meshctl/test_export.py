"""`meshctl export-terraform`: HCL for a mesh that reads back to the same specs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from meshctl.sources import terraform
from tests.meshctl import expected
from tests.meshctl.conftest import FIXTURES


def _meshctl_binary() -> list[str]:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).parent / "meshctl"
    if script.exists():
        return [str(script)]
    found = shutil.which("meshctl")
    assert found, "meshctl is not installed (pip install -e .)"
    return [found]


def _specs(resources) -> dict:
    return {(r.kind.key, r.parent or "", r.name): r.spec for r in resources}


def test_export_as_a_subprocess_reads_back_to_the_same_specs(meshctl, alice, api_server):
    assert meshctl("import", "appmesh", "--from", str(FIXTURES / "terraform.tfstate")).code == 0
    live = expected.read_mesh(alice.appmesh())

    done = subprocess.run(
        [
            *_meshctl_binary(), "export-terraform", "--mesh", "shop",
            "--profile", "meshplane", "--endpoint-url", api_server.url,
        ],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    hcl = done.stdout
    assert 'resource "meshplane_route" "catalog_catalog-split" {' in hcl
    # References carry the order Terraform needs; backends stay literal (no cycles).
    assert "virtual_router_name = meshplane_virtual_router.catalog.name" in hcl
    assert "virtual_node = meshplane_virtual_node.catalog-v1.name" in hcl
    assert "virtual_router_name = meshplane_virtual_router.catalog.name" in hcl
    assert "virtual_service_name = meshplane_virtual_service.frontend_shop_local.name" in hcl
    assert 'virtual_service_name = "catalog.shop.local"' in hcl
    assert "attributes = {\n" in hcl  # Cloud Map attributes: a map, as aws_appmesh_* has it
    read_back = terraform.from_text(hcl, "shop.tf")
    assert _specs(read_back) == live
    assert {r.label: r.tags for r in read_back if r.tags} == {"mesh shop": {"team": "shop"}}


def test_export_for_the_aws_provider_imports_into_another_tenant(meshctl, charlie, tmp_path):
    assert meshctl("import", "appmesh", "--from", str(FIXTURES / "k8s")).code == 0
    out = tmp_path / "shop.tf"

    exported = meshctl("export-terraform", "--mesh", "shop", "--provider", "aws", "-o", str(out))

    assert exported.code == 0, exported.err
    text = out.read_text()
    assert 'resource "aws_appmesh_virtual_gateway" "shop-gateway_shop" {' in text
    assert "meshplane_" not in text
    imported = meshctl("import", "appmesh", "--from", str(out), profile="old")
    assert imported.code == 0, imported.err
    assert expected.read_mesh(charlie.appmesh()) == expected.specs(expected.KUBERNETES)


def test_export_of_an_unknown_mesh_fails_clearly(meshctl):
    result = meshctl("export-terraform", "--mesh", "nope")

    assert result.code == 1
    assert "mesh 'nope' not found" in result.err
