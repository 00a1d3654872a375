"""Redirect mode for real: the agent installs App Mesh's iptables rules in a fresh network
namespace, outbound traffic of another UID lands on Envoy's egress (15001), Envoy runs as
UID 1337, and the rules are gone after the agent exits. Skipped, with the reason, where a
network namespace with iptables cannot be had (not root, no unshare, no iptables)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.proxy_agent.processes import ROOT, clean_env, envoy_available


def _unavailable() -> str:
    if not envoy_available():
        return "no Envoy binary (make envoy)"
    if os.geteuid() != 0:
        return "redirect mode needs root to create a network namespace"
    for tool in ("unshare", "iptables", "ip"):
        if not shutil.which(tool):
            return f"no {tool} binary (apt-get install iptables iproute2 util-linux)"
    probe = subprocess.run(
        ["unshare", "--net", "sh", "-c", "ip link add v0 type veth peer name v1 && "
         "iptables -t nat -N MESHPLANE_PROBE"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"cannot make a network namespace with veth and iptables: {probe.stderr.strip()}"
    return ""


def test_redirect_mode_sends_outbound_traffic_through_envoy_and_cleans_up():
    reason = _unavailable()
    if reason:
        print(f"SKIP redirect mode: {reason}")
        pytest.skip(reason)
    env = clean_env({"PYTHONPATH": str(ROOT)})
    result = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "tests.proxy_agent.redirect_scene"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert "error" not in seen, seen["error"]
    assert seen["before"].startswith("error")  # nothing listens on 10.99.0.2:9999
    assert seen["redirected"] == "remote", seen
    assert any("--to-ports 15001" in r or "--to-port 15001" in r for r in seen["rules"])
    assert any("--uid-owner 1337 -j RETURN" in r for r in seen["rules"])
    assert seen["envoy_uids"] and set(seen["envoy_uids"]) == {1337}
    assert seen["exit"] == 0
    assert seen["rules_after"] == []
    assert seen["after"].startswith("error")
