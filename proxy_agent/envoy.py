"""Envoy: its bootstrap, and a supervisor that starts it, restarts it and drains it.

The bootstrap points every dynamic resource at ADS over the agent's Unix socket (cluster
`meshplane_agent`), so Envoy never talks to the control plane and never sees more than
the agent relays; admin listens on loopback only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from proxy_agent.files import write_atomic

log = logging.getLogger(__name__)

AGENT_CLUSTER = "meshplane_agent"
# App Mesh accepts regexes up to 255 characters, beyond RE2's default program size in Envoy
# (the compiler's BOOTSTRAP_RUNTIME says the same).
RUNTIME = {"re2.max_program_size.error_level": 1000}
RESTART_MIN, RESTART_MAX = 1.0, 30.0
STABLE_SECONDS = 60.0  # a run this long resets the restart backoff


def bootstrap(
    *,
    node_id: str,
    cluster: str,
    metadata: dict,
    ads_socket: Path,
    admin_port: int,
    admin_address: str = "127.0.0.1",
) -> dict:
    """Envoy's bootstrap (JSON, as `envoy -c` reads it)."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": cluster, "metadata": metadata},
        "admin": {
            "address": {"socket_address": {"address": admin_address, "port_value": admin_port}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": AGENT_CLUSTER}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": AGENT_CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": AGENT_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {"endpoint": {"address": {"pipe": {"path": str(ads_socket)}}}}
                                ]
                            }
                        ],
                    },
                }
            ]
        },
        "bootstrap_extensions": [
            {
                # Gateways reach router-provided services through internal listeners.
                "name": "envoy.bootstrap.internal_listener",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.bootstrap.internal_listener.v3.InternalListener"
                },
            }
        ],
        "layered_runtime": {"layers": [{"name": "static", "static_layer": RUNTIME}]},
    }


def write_bootstrap(path: Path, config: dict) -> Path:
    write_atomic(path, json.dumps(config, indent=1).encode(), mode=0o644)
    return path


@dataclass
class Admin:
    """Envoy's admin API on loopback."""

    port: int
    address: str = "127.0.0.1"

    def url(self, path: str) -> str:
        return f"http://{self.address}:{self.port}{path}"

    async def _request(self, method: str, path: str) -> tuple[int, bytes, str]:
        # HTTP/1.1 on the event loop, one request per connection: no urllib (about 3 MB of
        # the agent's memory) and no thread for it.
        reader, writer = await asyncio.open_connection(self.address, self.port)
        try:
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: {self.address}:{self.port}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode("latin-1")
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[1].isdigit():
                raise ConnectionError(f"Envoy admin: bad status line {status_line!r}")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = bytearray()
                while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    body += await reader.readexactly(size + 2)
                    del body[-2:]
                body = bytes(body)
            elif "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            else:
                body = await reader.read()
            return int(parts[1]), body, headers.get("content-type", "")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise ConnectionError(f"Envoy admin: bad answer to {path}: {exc}") from exc
        finally:
            writer.close()

    async def call(self, method: str, path: str, timeout: float = 5.0) -> tuple[int, bytes, str]:
        """(status, body, content type); OSError (TimeoutError among them) if Envoy's admin
        does not answer in time or answers with something that is not HTTP."""
        return await asyncio.wait_for(self._request(method, path), timeout)

    async def live(self) -> bool:
        try:
            status, body, _ = await self.call("GET", "/ready", timeout=2.0)
        except OSError:
            return False
        return status == 200 and body.strip() == b"LIVE"

    async def warmed(self) -> bool:
        """Every listener Envoy was given is serving (none still warming: a listener is
        ACKed before its routes and clusters have arrived)."""
        try:
            status, body, _ = await self.call(
                "GET", "/stats?filter=^listener_manager.total_listeners_&format=json", timeout=2.0
            )
            stats = {s["name"]: s.get("value", 0) for s in json.loads(body).get("stats", [])}
        except (OSError, ValueError, KeyError):
            return False
        return status == 200 and stats.get("listener_manager.total_listeners_warming", 1) == 0


class EnvoySupervisor:
    """Runs Envoy, restarts it with backoff when it dies, drains it on request."""

    def __init__(
        self,
        binary: str,
        bootstrap_path: Path,
        admin: Admin,
        *,
        log_path: Path | None = None,
        log_level: str = "info",
        drain_seconds: float = 20.0,
        extra_args: tuple[str, ...] = (),
        user: int | None = None,
        concurrency: int = 0,
    ) -> None:
        self.binary = binary
        self.bootstrap_path = bootstrap_path
        self.admin = admin
        self.log_path = log_path
        self.log_level = log_level
        self.drain_seconds = drain_seconds
        self.extra_args = extra_args
        self.concurrency = concurrency  # worker threads; 0: Envoy's default (one per core)
        self.user = user  # redirect mode as root: Envoy runs as the proxy UID
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.stopping = False
        self._log_file = None

    def command(self) -> list[str]:
        return [
            self.binary,
            "-c",
            str(self.bootstrap_path),
            "--disable-hot-restart",
            "--log-level",
            self.log_level,
            "--drain-time-s",
            str(max(1, int(self.drain_seconds))),
            "--drain-strategy",
            "immediate",
            *(("--concurrency", str(self.concurrency)) if self.concurrency > 0 else ()),
            *self.extra_args,
        ]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def _start(self) -> asyncio.subprocess.Process:
        if self.log_path is not None and self._log_file is None:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives with the agent
        out = self._log_file if self._log_file is not None else None
        self.process = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            # Its own session: a terminal's ^C must not kill it; the agent drains it. If the
            # agent is killed, it keeps serving until the next agent replaces it (stop_stale).
            # Where the kernel groups scheduling by session (autogroup, processes in the root
            # cgroup) it is also Envoy's own share of the CPU, not one shared with the agent's
            # session (docs/benchmarks.md, Data plane). Containers and systemd units are
            # cgroups of their own, where this does not apply.
            start_new_session=True,
            **({"user": self.user} if self.user is not None else {}),
        )
        log.info("envoy: started pid %s", self.process.pid)
        self.pid_path.write_text(f"{self.process.pid}\n")
        return self.process

    @property
    def pid_path(self) -> Path:
        return self.bootstrap_path.parent / "envoy.pid"

    async def stop_stale(self, grace: float = 5.0) -> None:
        """An Envoy left by an agent that was killed (SIGKILL, OOM) still holds the ports and
        serves the last configuration; the new agent's Envoy takes over from it. (Only one
        started with this very bootstrap file is touched.)"""
        try:
            pid = int(self.pid_path.read_text().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(self.bootstrap_path).encode() not in f.read():
                    return
        except (OSError, ValueError):
            return
        log.warning("envoy: stopping pid %s, left running by a previous agent", pid)
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def run(self) -> None:
        """Keep Envoy running until `stop()`."""
        delay = RESTART_MIN
        await self.stop_stale()
        while not self.stopping:
            try:
                process = await self._start()
            except (OSError, subprocess.SubprocessError) as exc:
                log.error("envoy: cannot start %s: %s", self.binary, exc)
                process = None
            started = time.monotonic()
            code = await process.wait() if process is not None else None
            if self.stopping:
                break
            if time.monotonic() - started > STABLE_SECONDS:
                delay = RESTART_MIN
            wait = delay * random.uniform(0.75, 1.0)
            self.restarts += 1
            log.warning("envoy: exited with %s; restarting in %.1fs", code, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, RESTART_MAX)

    async def drain_and_stop(self, deadline: float | None = None) -> None:
        """Fail health checks, drain listeners (in-flight requests finish, new connections
        are refused), then stop Envoy by `deadline` seconds from now."""
        self.stopping = True
        deadline = self.drain_seconds if deadline is None else deadline
        if not self.running:
            return
        began = time.monotonic()
        try:
            await self.admin.call("POST", "/healthcheck/fail", timeout=2.0)
            await self.admin.call("POST", "/drain_listeners?graceful", timeout=2.0)
            log.info("envoy: draining (up to %.0fs)", deadline)
            while time.monotonic() - began < deadline and self.running:
                if await self._idle():
                    break
                await asyncio.sleep(0.5)
        except OSError as exc:
            log.warning("envoy: admin unreachable while draining: %s", exc)
        await self.terminate(max(1.0, deadline - (time.monotonic() - began)))

    async def _idle(self) -> bool:
        """No downstream connections left on any listener (admin's stats)."""
        status, body, _ = await self.admin.call(
            "GET", "/stats?filter=downstream_cx_active$&format=json", timeout=2.0
        )
        if status != 200:
            return False
        try:
            stats = json.loads(body).get("stats", [])
        except ValueError:
            return False
        return all(
            s.get("value", 0) == 0
            for s in stats
            if s.get("name", "").startswith("listener.") and "admin" not in s.get("name", "")
        )

    async def terminate(self, grace: float = 5.0) -> None:
        self.stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        log.info("envoy: stopped (%s)", process.returncode)
