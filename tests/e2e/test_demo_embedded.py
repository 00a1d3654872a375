"""`make demo` end to end on embedded defaults — the one test of that path: SQLite and
in-process tasks (no DATABASE_URL / REDIS_URL), the aws CLI commands and credentials it
prints working against the server it started, a clear refusal of a taken port, a clean
Ctrl-C, and a re-run that reuses the same key and leaves the sample mesh unchanged."""

import copy
import json
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest

from tests.support.live import ROOT, free_port

pytestmark = pytest.mark.e2e

READY_TIMEOUT = 60
READY = re.compile(r"Meshplane demo ready at (http://\S+)")


class Demo:
    """`manage.py demo` as a child process, its output read line by line."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: re.Pattern, timeout: float = READY_TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"demo exited ({self.proc.wait()}) before ready:\n{self.output}")
            self.lines.append(line)
            if match := pattern.search(line):
                return match
        pytest.fail(f"demo not ready within {timeout:.0f} s:\n{self.output}")

    def stop(self, signum: int) -> int:
        self.proc.send_signal(signum)
        code = self.proc.wait(30)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return code

    def value(self, label: str) -> str:
        """The value printed after `label` (e.g. "Access key id:")."""
        for line in self.lines:
            if line.strip().startswith(label):
                return line.split(label, 1)[1].strip()
        pytest.fail(f"'{label}' not printed:\n{self.output}")


def _embedded_env(var_dir: Path) -> dict[str, str]:
    """The caller's environment minus the services `make test` sets and any AWS settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("AWS_")
    }
    env["MESHPLANE_VAR_DIR"] = str(var_dir)
    return env


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _run_printed(command: str, env: dict[str, str]) -> dict:
    result = subprocess.run(
        shlex.split(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    return json.loads(result.stdout)


def test_make_demo_runs_embedded_and_its_printed_commands_work(tmp_path):
    var_dir = tmp_path / "var"
    env = _embedded_env(var_dir)
    port = free_port()
    demo = Demo(env, port)
    try:
        url = demo.wait_for(READY)[1]
        assert url == f"http://127.0.0.1:{port}"
        assert "tasks: in-process" in demo.output
        assert (var_dir / "meshplane.sqlite3").is_file()
        assert "10 created, 0 updated, 0 unchanged" in demo.output
        for private in ("demo/access-key.json", "demo/aws/config", "demo/aws/credentials"):
            assert (var_dir / private).stat().st_mode & 0o777 == 0o600, private

        # The printed export line and aws CLI commands, run as a user would paste them.
        (export,) = [ln.strip() for ln in demo.lines if ln.strip().startswith("export ")]
        cli_env = dict(env)
        cli_env.update(dict(a.split("=", 1) for a in shlex.split(export)[1:]))
        commands = [ln.strip() for ln in demo.lines if " appmesh " in ln]
        assert len(commands) == 3
        assert all(f"--endpoint-url {url} --profile meshplane" in c for c in commands)
        account = re.search(r"account (\d{12})", demo.output)[1]

        meshes = _run_printed(commands[0], cli_env)["meshes"]
        assert [(m["meshName"], m["arn"]) for m in meshes] == [
            ("shop", f"arn:aws:appmesh:us-east-1:{account}:mesh/shop")
        ]
        nodes = _run_printed(commands[1], cli_env)["virtualNodes"]
        assert sorted(n["virtualNodeName"] for n in nodes) == [
            "catalog-v1",
            "catalog-v2",
            "frontend",
        ]
        route = _run_printed(commands[2], cli_env)["route"]
        targets = route["spec"]["httpRoute"]["action"]["weightedTargets"]
        assert {t["virtualNode"]: t["weight"] for t in targets} == {
            "catalog-v1": 90,
            "catalog-v2": 10,
        }

        # The printed key with boto3, signed for another region: accepted, ARNs stay in
        # the tenant's home region.
        client = boto3.client(
            "appmesh",
            endpoint_url=url,
            region_name="eu-west-1",
            aws_access_key_id=demo.value("Access key id:"),
            aws_secret_access_key=demo.value("Secret access key:"),
        )
        service = client.describe_virtual_service(
            meshName="shop", virtualServiceName="catalog.shop.local"
        )["virtualService"]
        assert service["spec"]["provider"] == {"virtualRouter": {"virtualRouterName": "catalog"}}
        assert service["metadata"]["arn"].startswith(f"arn:aws:appmesh:us-east-1:{account}:")
        gateway_route = client.describe_gateway_route(
            meshName="shop", virtualGatewayName="shop-gateway", gatewayRouteName="to-frontend"
        )["gatewayRoute"]
        target = gateway_route["spec"]["httpRoute"]["action"]["target"]
        assert target["virtualService"]["virtualServiceName"] == "frontend.shop.local"
        # A user's change to the sample, which the re-run below puts back.
        split = copy.deepcopy(route["spec"])
        for target in split["httpRoute"]["action"]["weightedTargets"]:
            target["weight"] = 50
        client.update_route(
            meshName="shop", virtualRouterName="catalog", routeName="catalog-split", spec=split
        )

        # A second demo on the same port says so and fails.
        clash = subprocess.run(
            [sys.executable, "manage.py", "demo", "--port", str(port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert clash.returncode != 0
        assert f"port {port} on 127.0.0.1 is already in use" in clash.stderr

        server_pids = {
            int(p)
            for p in re.findall(
                r"\[(\d+)\] \[INFO\] (?:Listening|Booting)",
                (var_dir / "demo/server.log").read_text(),
            )
        }
        assert server_pids
        assert demo.stop(signal.SIGINT) == 0
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
    assert "Meshplane demo stopped." in demo.output
    assert _port_is_free(port)
    assert not [pid for pid in server_pids if _pid_alive(pid)], "orphan server process"

    # A re-run reuses the key and puts the changed route back to 90/10; SIGTERM stops it.
    rerun = Demo(env, port)
    try:
        rerun.wait_for(READY)
        assert rerun.value("Access key id:") == demo.value("Access key id:")
        assert rerun.value("Secret access key:") == demo.value("Secret access key:")
        assert "(reused)" in rerun.output
        assert "0 created, 1 updated, 9 unchanged" in rerun.output
        route = client.describe_route(
            meshName="shop", virtualRouterName="catalog", routeName="catalog-split"
        )["route"]
        targets = route["spec"]["httpRoute"]["action"]["weightedTargets"]
        assert [t["weight"] for t in targets] == [90, 10]
        assert route["metadata"]["version"] == 3
        assert rerun.stop(signal.SIGTERM) == 0
    finally:
        if rerun.proc.poll() is None:
            rerun.proc.kill()
    assert _port_is_free(port)
