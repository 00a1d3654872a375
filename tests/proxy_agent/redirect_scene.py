"""Run inside a fresh network namespace (`unshare --net`, as root) by test_redirect.py.

A veth pair gives the namespace a non-local subnet (10.99.0.0/24). A fake control plane
serves an Envoy listener on 15001 that sends everything to a local backend; `meshagent run
--interception redirect` installs the rules and runs Envoy as UID 1337. Then a process of
another UID connects to 10.99.0.2:9999, an address nothing listens on: redirected, it reaches
Envoy's egress and the backend. Prints one JSON line of what was observed.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from tests.proxy_agent.fake_upstream import FakeAds, simple_config
from tests.proxy_agent.processes import AgentProcess, HttpBackend, envoy_binary

NODE = "mesh/shop/virtualNode/cart"
# The client runs as another UID: the system interpreter, which any user may run.
CLIENT_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
CLIENT = """
import http.client, sys
try:
    c = http.client.HTTPConnection("10.99.0.2", 9999, timeout=3)
    c.request("GET", "/")
    r = c.getresponse()
    body = r.read().decode()
    print(body if r.status == 200 else f"status {r.status}: {body[:200]}")
except OSError as exc:
    print("error: " + type(exc).__name__)
"""


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def as_nobody() -> str:
    result = subprocess.run(
        [CLIENT_PYTHON, "-c", CLIENT], capture_output=True, text=True, user=65534, timeout=30
    )
    return result.stdout.strip() or result.stderr.strip()[-300:]


def nat_rules() -> list[str]:
    return [line for line in sh("iptables", "-t", "nat", "-S").splitlines() if "MESHPLANE" in line]


def envoy_uids(data_dir: str) -> list[int]:
    """UIDs of the Envoys started with this data directory's bootstrap."""
    uids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "envoy":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if data_dir.encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/status") as f:
                uids += [int(line.split()[1]) for line in f if line.startswith("Uid:")]
        except OSError:
            continue
    return uids


def main() -> None:
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    sh("ip", "addr", "add", "10.99.0.1/24", "dev", "v0")
    sh("ip", "link", "set", "v0", "up")
    sh("ip", "link", "set", "v1", "up")
    backend = HttpBackend("remote")
    ads = FakeAds()
    simple_config(ads, "v1", 15001, backend.port)
    data_dir = tempfile.mkdtemp(prefix="meshagent-redirect-", dir="/tmp")
    out: dict = {"before": as_nobody()}
    agent = AgentProcess(
        data_dir,
        "--insecure", "--tenant", "demo", "--control-plane", ads.address, "--node", NODE,
        "--interception", "redirect", "--app-port", "8080",
        envoy=envoy_binary(),
    )  # fmt: skip
    try:
        agent.wait_ready()
        out["rules"] = nat_rules()
        # Envoy ACKs a listener before it has warmed: allow it a moment to start serving.
        deadline = time.monotonic() + 10
        out["redirected"] = as_nobody()
        while out["redirected"] != "remote" and time.monotonic() < deadline:
            time.sleep(0.2)
            out["redirected"] = as_nobody()
        out["envoy_uids"] = envoy_uids(data_dir)
    except AssertionError as exc:
        out["error"] = str(exc)[-3000:]
    finally:
        out["exit"] = agent.stop()
        out["rules_after"] = nat_rules()
        out["after"] = as_nobody()
        ads.stop()
        backend.stop()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
