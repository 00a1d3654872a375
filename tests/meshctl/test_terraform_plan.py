"""export-terraform → terraform import → terraform plan shows no changes (real Terraform,
real meshplane provider). Skipped until the provider is installed (`.tools/tfprovider`)."""

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.meshctl import expected
from tests.meshctl.conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_BIN = ROOT / ".tools" / "tfprovider" / "bin" / "terraform-provider-meshplane"
PROVIDER_TF = """terraform {
  required_providers {
    meshplane = { source = "meshplane/meshplane" }
  }
}

provider "meshplane" {}
"""

pytestmark = pytest.mark.e2e


def _terraform() -> str:
    """A Terraform that reads `import` blocks (>= 1.5), or skip."""
    binary = shutil.which("terraform")
    if binary is None or not PROVIDER_BIN.exists():
        pytest.skip("needs terraform >= 1.5 on PATH and the meshplane provider (make tfprovider)")
    version = subprocess.run(
        [binary, "version"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "CHECKPOINT_DISABLE": "1", "TF_CLI_CONFIG_FILE": os.devnull},
    ).stdout  # fmt: skip
    found = re.search(r"Terraform v(\d+)\.(\d+)", version)
    if not found or (int(found.group(1)), int(found.group(2))) < (1, 5):
        pytest.skip(f"terraform on PATH is too old for import blocks: {version.splitlines()[:1]}")
    return binary


def _run(binary: str, work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """One terraform command in its own process group, killed with any provider it left."""
    proc = subprocess.Popen(
        [binary, *args, "-no-color"], cwd=work, env=env, text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_export_imported_by_terraform_plans_no_changes(meshctl, alice, api_server, tmp_path):
    binary = _terraform()
    assert meshctl("import", "appmesh", "--from", str(FIXTURES / "terraform.tfstate")).code == 0
    before = expected.read_mesh(alice.appmesh())
    work = tmp_path / "work"
    work.mkdir()
    exported = meshctl(
        "export-terraform", "--mesh", "shop", "--import-blocks", "-o", str(work / "shop.tf")
    )
    assert exported.code == 0, exported.err
    (work / "provider.tf").write_text(PROVIDER_TF)
    rc = tmp_path / "terraformrc"
    rc.write_text(
        "provider_installation {\n  dev_overrides {\n"
        f'    "registry.terraform.io/meshplane/meshplane" = "{PROVIDER_BIN.parent}"\n'
        "  }\n  direct {}\n}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    env.update(
        TF_CLI_CONFIG_FILE=str(rc), CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1",
        HOME=str(tmp_path), MESHPLANE_ENDPOINT=api_server.url,
        MESHPLANE_ACCESS_KEY_ID=alice.key_id, MESHPLANE_SECRET_ACCESS_KEY=alice.secret,
        MESHPLANE_REGION="us-east-1",
    )  # fmt: skip

    first = _run(binary, work, env, "plan", "-input=false")
    assert first.returncode == 0, first.stdout + first.stderr
    total = len(before)
    assert f"Plan: {total} to import, 0 to add, 0 to change, 0 to destroy." in first.stdout

    applied = _run(binary, work, env, "apply", "-input=false", "-auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    again = _run(binary, work, env, "plan", "-input=false", "-detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes." in again.stdout
    assert expected.read_mesh(alice.appmesh()) == before
