"""The aws CLI, configured as the README tells a user, against the live server."""

import json
import os
import subprocess
import sys

import pytest

from tests.e2e import specs
from tests.e2e.specs import ACCOUNT, arn


@pytest.fixture
def aws(alice, api_server, tmp_path):
    """Run `aws …` with a `meshplane` profile holding alice's key; returns the parsed JSON."""
    config = tmp_path / "config"
    config.write_text("[profile meshplane]\nregion = us-east-1\noutput = json\n")
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[meshplane]\naws_access_key_id = {alice.key_id}\naws_secret_access_key = {alice.secret}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(credentials),
        AWS_MAX_ATTEMPTS="1",
        HOME=str(tmp_path),
    )

    def run(*args: str) -> dict:
        cmd = [sys.executable, "-m", "awscli", "appmesh", *args]
        cmd += ["--endpoint-url", api_server.url, "--profile", "meshplane"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return run


def test_aws_cli_creates_lists_and_describes(aws, tmp_path):
    created = aws("create-mesh", "--mesh-name", "shop")["mesh"]
    assert created["meshName"] == "shop"
    assert created["metadata"]["arn"] == arn("mesh/shop")
    assert created["metadata"]["meshOwner"] == ACCOUNT
    assert created["spec"] == {"egressFilter": {"type": "DROP_ALL"}}
    assert created["status"] == {"status": "ACTIVE"}

    listed = aws("list-meshes")["meshes"]
    assert [(m["meshName"], m["arn"], m["version"]) for m in listed] == [
        ("shop", arn("mesh/shop"), 1)
    ]
    assert (
        aws("describe-mesh", "--mesh-name", "shop")["mesh"]["metadata"]["uid"]
        == (created["metadata"]["uid"])
    )

    node_input = tmp_path / "node.json"
    spec = specs.node_spec_dns()
    node_input.write_text(
        json.dumps({"meshName": "shop", "virtualNodeName": "orders", "spec": spec})
    )
    node = aws("create-virtual-node", "--cli-input-json", f"file://{node_input}")["virtualNode"]
    assert node["spec"] == spec
    assert node["metadata"]["arn"] == arn("mesh/shop/virtualNode/orders")
    assert node["metadata"]["version"] == 1
