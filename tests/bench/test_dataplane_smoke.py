"""bench/dataplane.py's plumbing, briefly: the upstream and load generator processes, and
the nginx pair when nginx is installed. Every request must come back whole (the body size
the upstream sends) and be counted; no timing is asserted."""

import json
import shutil
import sys

import pytest

from bench import dataplane
from bench.procs import Child

pytestmark = pytest.mark.e2e

RATE, SECONDS, BODY = 200, 0.5, 1024


@pytest.fixture
def processes():
    env = dataplane.clean_env()
    script = [sys.executable, dataplane.SCRIPT]
    upstream = Child("smoke-upstream", dataplane.guarded([*script, "--upstream", str(BODY)]), env)
    load = Child("smoke-load", dataplane.guarded([*script, "--load"]), env)
    try:
        yield upstream, load
    finally:
        load.stop()
        upstream.stop()


def _phase(load: Child, port: int) -> dict:
    command = {
        "port": port,
        "host": "upstream",
        "rate": RATE,
        "connections": 4,
        "body": BODY,
        "warmup": 0,
        "seconds": SECONDS,
    }
    return load.ask(command, 60)


def test_direct_and_nginx_answer_every_request_whole(processes, tmp_path):
    upstream, load = processes
    port = json.loads(upstream.read(30))["port"]
    expected = int(RATE * SECONDS)

    direct = _phase(load, port)
    assert direct["errors"] == {}
    assert direct["answered"] == direct["recorded"] == expected
    assert set(direct["latency"]) == {"p50", "p90", "p99", "max"}

    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if binary is None:
        pytest.skip("no nginx binary (apt-get install -y nginx-light): direct path checked")
    pair = dataplane.ProxyPair(
        "nginx", binary, dataplane.nginx_command, tmp_path / "nginx", port, {port}
    )
    try:
        through = _phase(load, pair.port)
        assert len(pair.pids()) == 6  # two masters, two workers each
    finally:
        pair.stop()
    assert through["errors"] == {}
    assert through["answered"] == through["recorded"] == expected
