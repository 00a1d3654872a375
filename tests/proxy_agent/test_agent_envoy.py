"""`meshagent run` with a real Envoy, against a fake control plane (FakeAds, plaintext, as
`serve_xds --insecure` would be): traffic through Envoy, an update, a NACK that leaves the
good config serving, the control plane going away, and a restart while it is away."""

import concurrent.futures
import json
import os
import signal

import pytest

from proxy_agent.relay import CLUSTER, LISTENER
from tests.proxy_agent.fake_upstream import FakeAds, http_listener, simple_config
from tests.proxy_agent.processes import AgentProcess, HttpBackend, envoy_available
from tests.proxy_agent.support import free_port, http_get, try_get, wait_for

pytestmark = pytest.mark.skipif(not envoy_available(), reason="no Envoy binary (make envoy)")

NODE = "mesh/shop/virtualNode/cart"


@pytest.fixture
def backend():
    server = HttpBackend("cart-backend")
    yield server
    server.stop()


def agent_args(ads: FakeAds) -> list[str]:
    return ["--insecure", "--tenant", "demo", "--control-plane", ads.address, "--node", NODE]


def answers(port: int, version: str):
    got = try_get(port)
    return got is not None and got[0] == 200 and got[1].get("x-route") == version and got


def test_envoy_serves_through_outages_and_restarts_from_the_cache(tmp_path, backend):
    ads = FakeAds()
    listen = free_port()
    simple_config(ads, "v1", listen, backend.port)
    agent = AgentProcess(tmp_path / "agent", *agent_args(ads))
    try:
        agent.wait_ready()
        status, headers, body = wait_for(lambda: answers(listen, "v1"), message=agent.log)
        assert body == b"cart-backend"
        # The node the control plane saw, and the cache on disk.
        assert any(node == NODE for node in (s.node_id for s in ads.streams.values()))
        assert json.loads((tmp_path / "agent/ports.json").read_text()) == {"in": listen}
        stats = agent.get("/stats/prometheus")
        assert stats[0] == 200 and b"envoy_cluster_upstream_rq" in stats[1]

        # An update reaches Envoy; a listener Envoy rejects is NACKed upstream with
        # Envoy's reason, and the good listener keeps serving.
        simple_config(ads, "v2", listen, backend.port)
        wait_for(lambda: answers(listen, "v2"), message="v2 never served")
        ads.set(LISTENER, "bad", {"in": http_listener("in", listen, "r", bogus_route=True)})
        nack = wait_for(lambda: ads.nacks(LISTENER), message="no NACK forwarded")
        assert "NoSuchFilter" in nack[-1].error_detail.message or nack[-1].error_detail.message
        assert answers(listen, "v2")
        rejections = agent.status()["rejections"]
        assert rejections and rejections[-1]["type"] == "listeners"

        # The control plane goes away: traffic keeps flowing.
        ads.stop()
        wait_for(lambda: not agent.status()["upstream"]["connected"], message="still up?")
        assert all(answers(listen, "v2") for _ in range(50))
        assert agent.ready()

        # Agent and Envoy restarted while it is still away: served from the cache.
        assert agent.stop() == 0
        assert try_get(listen) is None  # Envoy went with it
        agent = AgentProcess(tmp_path / "agent", *agent_args(ads))
        agent.wait_ready()
        wait_for(lambda: answers(listen, "v2"), message="cache not served")
        assert all(answers(listen, "v2") for _ in range(20))

        # Back again on the same address: the stream resumes from the version held,
        # and only a change is pushed.
        ads = FakeAds(port=int(ads.address.rsplit(":", 1)[1]))
        simple_config(ads, "v2", listen, backend.port)
        first = wait_for(lambda: ads.of_type(CLUSTER), message="never reconnected")
        assert first[0].version_info == "v2"
        simple_config(ads, "v3", listen, backend.port)
        wait_for(lambda: answers(listen, "v3"), message="v3 never served")
    finally:
        agent.stop()
        ads.stop()


def test_sigterm_finishes_in_flight_requests_then_stops_envoy(tmp_path, backend):
    ads = FakeAds()
    listen = free_port()
    simple_config(ads, "v1", listen, backend.port)
    agent = AgentProcess(tmp_path / "agent", *agent_args(ads))
    try:
        agent.wait_ready()
        wait_for(lambda: answers(listen, "v1"), message=agent.log)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            before = backend.count
            in_flight = pool.submit(http_get, listen, "/slow")
            wait_for(lambda: backend.count > before, message="the slow request never arrived")
            agent.proc.send_signal(signal.SIGTERM)
            status, _, body = in_flight.result(timeout=20)
        assert (status, body) == (200, b"cart-backend")
        assert agent.stop(timeout=20) == 0  # within the 3 s drain deadline plus start-up
        assert try_get(listen) is None
    finally:
        agent.stop()
        ads.stop()


def _envoy_pids(data_dir) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "envoy":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(data_dir).encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_a_crashed_envoy_is_restarted_and_configured_again(tmp_path, backend):
    ads = FakeAds()
    listen = free_port()
    simple_config(ads, "v1", listen, backend.port)
    agent = AgentProcess(tmp_path / "agent", *agent_args(ads))
    try:
        agent.wait_ready()
        wait_for(lambda: answers(listen, "v1"), message=agent.log)
        [pid] = _envoy_pids(tmp_path / "agent")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: agent.status().get("envoyRestarts") == 1, message=agent.log)
        wait_for(lambda: answers(listen, "v1"), message=agent.log)
        assert _envoy_pids(tmp_path / "agent") not in ([], [pid])
        agent.wait_ready()
    finally:
        agent.stop()
        ads.stop()


def test_a_listener_port_shared_with_another_proxy_is_reported_not_ready(tmp_path, backend):
    """Envoy binds with SO_REUSEPORT: two proxies given one port silently split its
    connections. The agent notices the other listener and says so instead of being ready."""
    other_backend = HttpBackend("someone-else")
    listen = free_port()
    upstreams = [FakeAds(), FakeAds()]
    simple_config(upstreams[0], "v1", listen, backend.port)
    simple_config(upstreams[1], "v1", listen, other_backend.port)
    first = AgentProcess(tmp_path / "one", *agent_args(upstreams[0]))
    second = None
    try:
        first.wait_ready()
        second = AgentProcess(tmp_path / "two", *agent_args(upstreams[1]))
        shared = wait_for(lambda: second.status().get("sharedPorts"), message=lambda: second.log())
        assert list(shared) == [str(listen)]
        assert not second.ready()
        wait_for(lambda: not first.ready(), message="the first agent never noticed")
        assert "shares it with pid" in second.log()
    finally:
        for agent in (first, second):
            if agent is not None:
                agent.stop()
        for ads in upstreams:
            ads.stop()
        other_backend.stop()


def test_a_killed_agent_leaves_envoy_serving_until_the_next_agent_replaces_it(tmp_path, backend):
    ads = FakeAds()
    listen = free_port()
    simple_config(ads, "v1", listen, backend.port)
    agent = AgentProcess(tmp_path / "agent", *agent_args(ads))
    try:
        agent.wait_ready()
        wait_for(lambda: answers(listen, "v1"), message=agent.log)
        [orphan] = _envoy_pids(tmp_path / "agent")
        agent.kill()
        assert all(answers(listen, "v1") for _ in range(20))  # Envoy serves on
        agent = AgentProcess(tmp_path / "agent", *agent_args(ads))
        agent.wait_ready()
        wait_for(lambda: orphan not in _envoy_pids(tmp_path / "agent"), message=agent.log)
        assert len(_envoy_pids(tmp_path / "agent")) == 1
        wait_for(lambda: answers(listen, "v1"), message=agent.log)
    finally:
        agent.stop()
        ads.stop()
