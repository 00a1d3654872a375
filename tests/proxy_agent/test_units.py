"""Agent pieces on their own: no Django, the bootstrap Envoy accepts, the cache and the
identity files written atomically and privately, renewal timing, redirect rules, and
command-line errors that name the flag."""

import dataclasses
import datetime
import os
import random
import stat
import subprocess
import sys

import pytest

from proxy_agent import cli
from proxy_agent.cache import ConfigCache, TypeConfig
from proxy_agent.config import ConfigError, node_from
from proxy_agent.envoy import Admin, EnvoySupervisor, bootstrap, write_bootstrap
from proxy_agent.files import write_atomic
from proxy_agent.identity import IdentityManager, split_identity_file
from proxy_agent.iptables import Iptables, RedirectRules, RedirectUnavailable
from proxy_agent.relay import CLUSTER, LISTENER
from tests.proxy_agent.fake_upstream import eds_cluster, http_listener
from tests.proxy_agent.processes import ENVOY, ROOT, envoy_available
from tests.proxy_agent.support import workload

NODE = "mesh/shop/virtualNode/cart"
SPIFFE = "spiffe://123456789012.meshplane.local/" + NODE
FORBIDDEN = ("django", "celery", "boto3", "botocore", "redis", "psycopg", "meshapi", "tenants")


def test_the_agent_imports_no_control_plane_code():
    code = (
        "import sys, proxy_agent.cli, proxy_agent.agent;"
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    loaded = set(result.stdout.split())
    assert {"proxy_agent", "grpc", "envoy"} <= loaded
    assert not loaded & set(FORBIDDEN), f"the agent imported {sorted(loaded & set(FORBIDDEN))}"


@pytest.mark.skipif(not envoy_available(), reason="no Envoy binary (make envoy)")
def test_envoy_accepts_the_bootstrap(tmp_path):
    config = bootstrap(
        node_id=NODE,
        cluster="cart",
        metadata={"consumer": "envoy", "interception": "explicit", "instance_id": "i-1"},
        ads_socket=tmp_path / "ads.sock",
        admin_port=19901,
    )
    path = write_bootstrap(tmp_path / "bootstrap.json", config)
    result = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ads = config["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == "GRPC"
    assert config["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 19901,
    }


def test_cache_round_trip_is_for_one_node_and_private(tmp_path):
    cache = ConfigCache(tmp_path / "xds-cache.json", NODE)
    types = {
        CLUSTER: TypeConfig("v1", {"c": eds_cluster("c")}),
        LISTENER: TypeConfig("v1", {"in": http_listener("in", 15000, "r")}),
    }
    cache.save(types)
    assert stat.S_IMODE(os.stat(cache.path).st_mode) == 0o600
    loaded = cache.load()
    assert {t: (c.version, sorted(c.resources)) for t, c in loaded.items()} == {
        CLUSTER: ("v1", ["c"]),
        LISTENER: ("v1", ["in"]),
    }
    assert loaded[CLUSTER].resources["c"] == types[CLUSTER].resources["c"]
    assert ConfigCache(cache.path, "mesh/shop/virtualNode/other").load() == {}


def test_a_failed_write_leaves_the_previous_cache(tmp_path, monkeypatch):
    cache = ConfigCache(tmp_path / "xds-cache.json", NODE)
    cache.save({CLUSTER: TypeConfig("v1", {"c": eds_cluster("c")})})

    def crash(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        cache.save({CLUSTER: TypeConfig("v2", {"c": eds_cluster("c")})})
    monkeypatch.undo()
    assert cache.load()[CLUSTER].version == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["xds-cache.json"]  # no tmp left behind


def test_identity_file_is_private_and_matched_to_its_node(tmp_path):
    manager = IdentityManager(
        tmp_path, NODE, control_plane="cp:1", join_address="", server_ca_pem=None,
        join_token_file=None,
    )  # fmt: skip
    w = workload(SPIFFE)
    manager._store(w)
    assert stat.S_IMODE(os.stat(tmp_path / "identity.pem").st_mode) == 0o600
    chain, key = split_identity_file((tmp_path / "identity.pem").read_bytes())
    assert (chain, key) == (w.chain_pem, w.key_pem)
    again = IdentityManager(
        tmp_path, NODE, control_plane="cp:1", join_address="", server_ca_pem=None,
        join_token_file=None,
    )  # fmt: skip
    assert again.load() == w
    other = IdentityManager(
        tmp_path, "mesh/shop/virtualNode/other", control_plane="cp:1", join_address="",
        server_ca_pem=None, join_token_file=None,
    )  # fmt: skip
    assert other.load() is None


def test_renewal_falls_at_half_the_lifetime_with_jitter(tmp_path):
    manager = IdentityManager(
        tmp_path, NODE, control_plane="cp:1", join_address="", server_ca_pem=None,
        join_token_file=None,
    )  # fmt: skip
    w = workload(SPIFFE, days=1)
    lifetime = (w.not_after - w.not_before).total_seconds()
    elapsed = (datetime.datetime.now(datetime.UTC) - w.not_before).total_seconds()
    delays = [manager.renew_delay(w, random.Random(seed)) for seed in range(50)]
    fractions = [(d + elapsed) / lifetime for d in delays]
    assert all(0.39 <= f <= 0.61 for f in fractions), fractions
    assert len({round(f, 3) for f in fractions}) > 10  # spread, not one instant


def test_renewal_counts_the_lifetime_from_arrival_not_the_backdated_not_before(tmp_path):
    manager = IdentityManager(
        tmp_path, NODE, control_plane="cp:1", join_address="", server_ca_pem=None,
        join_token_file=None,
    )  # fmt: skip
    # Valid for 10 s from now, backdated a minute (as the control plane issues them).
    w = workload(SPIFFE, days=10 / 86400, backdate_seconds=60)
    w = dataclasses.replace(w, received_at=datetime.datetime.now(datetime.UTC))
    delays = [manager.renew_delay(w, random.Random(seed)) for seed in range(20)]
    assert all(3.0 <= d <= 6.1 for d in delays), delays


def test_redirect_rules_are_app_meshs_and_removed_in_full():
    rules = RedirectRules(app_ports=(8080,), egress_ignored_ports=(22,), egress_ignored_ips=())
    commands = [" ".join(c) for c in rules.install_commands()]
    assert (
        "-t nat -A MESHPLANE_INGRESS -p tcp -m multiport --dports 8080 -j REDIRECT --to-port 15000"
        in commands
    )
    assert "-t nat -A MESHPLANE_EGRESS -m owner --uid-owner 1337 -j RETURN" in commands
    assert "-t nat -A MESHPLANE_EGRESS -p tcp -m multiport --dports 22 -j RETURN" in commands
    assert commands[-2] == "-t nat -A MESHPLANE_EGRESS -p tcp -j REDIRECT --to-port 15001"
    removed = [" ".join(c) for c in rules.remove_commands()]
    assert "-t nat -X MESHPLANE_INGRESS" in removed and "-t nat -X MESHPLANE_EGRESS" in removed
    jumps = [c.replace(" -A ", " -D ") for c in commands if " -j MESHPLANE_" in c]
    assert set(jumps) <= set(removed)


def test_redirect_without_permission_says_why():
    def denied(args):
        message = "iptables: Permission denied (you must be root)"
        return subprocess.CompletedProcess(args, 4, "", message)

    with pytest.raises(RedirectUnavailable, match="NET_ADMIN"):
        Iptables(binary="/sbin/iptables", runner=denied).check()
    with pytest.raises(RedirectUnavailable, match="no iptables binary"):
        Iptables(binary="", runner=denied).check()


def test_node_from_flag_or_app_mesh_arn():
    arn = "arn:aws:appmesh:us-east-1:123456789012:mesh/shop/virtualNode/cart"
    assert node_from("", arn) == (NODE, arn)
    assert node_from(NODE, "") == (NODE, "")
    with pytest.raises(ConfigError, match="--node"):
        node_from("cart", "")
    with pytest.raises(ConfigError, match="APPMESH_RESOURCE_ARN"):
        node_from("", "arn:aws:appmesh:us-east-1:123456789012:mesh/shop")


def test_command_line_errors_name_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("APPMESH_RESOURCE_ARN", raising=False)
    base = ["run", "--data-dir", str(tmp_path), "--envoy", sys.executable]
    assert cli.main(base + ["--node", NODE]) == 2
    assert "--control-plane" in capsys.readouterr().err
    assert cli.main(base + ["--node", NODE, "--control-plane", "cp:15010"]) == 2
    assert "--ca-file" in capsys.readouterr().err
    args = base + ["--node", NODE, "--control-plane", "cp:15010", "--ca-file", "x"]
    assert cli.main(args + ["--interception", "redirect"]) == 2
    assert "--app-port" in capsys.readouterr().err


def test_envoy_concurrency_from_the_flag_or_app_meshs_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("APPMESH_RESOURCE_ARN", raising=False)
    monkeypatch.delenv("ENVOY_CONCURRENCY", raising=False)
    base = ["run", "--data-dir", str(tmp_path), "--envoy", sys.executable, "--node", NODE,
            "--control-plane", "cp:15010", "--ca-file", "ca.pem"]  # fmt: skip
    assert cli.config_from(cli.parser().parse_args(base)).envoy_concurrency == 0
    monkeypatch.setenv("ENVOY_CONCURRENCY", "1")  # App Mesh's Envoy image's name
    assert cli.config_from(cli.parser().parse_args(base)).envoy_concurrency == 1
    args = cli.parser().parse_args(base + ["--envoy-concurrency", "3"])
    assert cli.config_from(args).envoy_concurrency == 3
    with pytest.raises(SystemExit):
        cli.parser().parse_args(base + ["--envoy-concurrency", "-1"])
    assert "--envoy-concurrency" in capsys.readouterr().err

    path = write_bootstrap(
        tmp_path / "bootstrap.json",
        bootstrap(node_id=NODE, cluster="cart", metadata={}, ads_socket=tmp_path / "ads.sock",
                  admin_port=19902),
    )  # fmt: skip
    assert "--concurrency" not in EnvoySupervisor(ENVOY or "envoy", path, Admin(19902)).command()
    envoy = EnvoySupervisor(
        ENVOY or "envoy", path, Admin(19902), concurrency=1, extra_args=("--mode", "validate")
    )
    command = envoy.command()
    assert command[command.index("--concurrency") + 1] == "1"
    if envoy_available():  # Envoy takes that command line
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_write_atomic_replaces_whole_files(tmp_path):
    path = tmp_path / "f"
    write_atomic(path, b"one")
    write_atomic(path, b"two", mode=0o644)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


class _EcsMetadata:
    """A local stand-in for the ECS task metadata endpoint v4 (its documented shapes)."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        bodies = {
            "/v4/abc/task": {"TaskARN": "arn:aws:ecs:us-east-1:111122223333:task/shop/0123"},
            "/v4/abc": {"Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.3.7"]}]},
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                body = json.dumps(bodies[self.path]).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v4/abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_on_ecs_the_task_arn_and_address_identify_the_instance(tmp_path, monkeypatch):
    ecs = _EcsMetadata()
    try:
        monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", ecs.url)
        monkeypatch.setenv("APPMESH_RESOURCE_ARN", "arn:aws:appmesh:us-east-1:111122223333:"
                           "mesh/shop/virtualNode/cart")  # fmt: skip
        monkeypatch.setenv("ENVOY_ADMIN_ACCESS_PORT", "9911")
        args = cli.parser().parse_args(
            ["run", "--data-dir", str(tmp_path), "--envoy", sys.executable, "--control-plane",
             "127.0.0.1:15010", "--ca-file", "ca.pem"]
        )  # fmt: skip
        config = cli.config_from(args)
    finally:
        ecs.server.shutdown()
    assert config.node_id == NODE
    assert config.instance_id == "arn:aws:ecs:us-east-1:111122223333:task/shop/0123"
    assert config.address == "10.0.3.7"
    assert config.admin_port == 9911
    metadata = config.node_metadata()
    assert metadata["APPMESH_RESOURCE_ARN"].endswith("virtualNode/cart")
    assert (metadata["consumer"], metadata["interception"]) == ("envoy", "explicit")
