"""The agent's process: identity, relay, Envoy, the status port, redirect rules; and the
order in which they start and stop.

Start: identity (stored, or join) → relay (cache loaded, Unix socket) → status port →
iptables (redirect) → Envoy. Stop (SIGTERM/SIGINT): Envoy drains within the deadline →
rules removed → sockets closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2

from proxy_agent.cache import ConfigCache
from proxy_agent.config import AgentConfig
from proxy_agent.envoy import Admin, EnvoySupervisor, bootstrap, write_bootstrap
from proxy_agent.files import private_dir, write_atomic
from proxy_agent.health import HealthServer, json_body
from proxy_agent.identity import IdentityError, IdentityManager
from proxy_agent.iptables import DEFAULT_IGNORED_IPS, Iptables, RedirectRules
from proxy_agent.relay import LocalSecrets, Relay

log = logging.getLogger(__name__)

FATAL_JOIN = ("UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "--join")


class AgentFailed(Exception):
    """The agent cannot run; the message says why."""


class _Stopped(Exception):
    """Asked to stop before it was up: a clean exit, not a failure."""


def _addresses(target: str) -> set[str]:
    import socket

    host, _, port = target.rpartition(":")
    try:
        return {i[4][0] for i in socket.getaddrinfo(host.strip("[]"), int(port))}
    except (OSError, ValueError):
        return set()


class Agent:
    def __init__(self, config: AgentConfig, *, run_envoy: bool = True) -> None:
        self.config = config
        self.run_envoy = run_envoy
        self.data_dir = private_dir(config.data_dir)
        self.identity: IdentityManager | None = None
        self.local = LocalSecrets()
        self.relay: Relay | None = None
        self.envoy: EnvoySupervisor | None = None
        self.admin = Admin(config.admin_port)
        self.iptables: Iptables | None = None
        self.status_port = 0
        self.port_conflicts: dict[int, list] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._servers: list = []

    # ------------------------------------------------------------ pieces

    def node(self) -> base_pb2.Node:
        node = base_pb2.Node(id=self.config.node_id, cluster=self.config.name)
        node.metadata.update(self.config.node_metadata())  # Struct: no json_format needed
        node.user_agent_name = "meshagent"
        return node

    def _server_ca(self) -> bytes | None:
        if self.config.ca_file is None:
            return None
        try:
            return self.config.ca_file.read_bytes()
        except OSError as exc:
            raise AgentFailed(f"--ca-file: cannot read {self.config.ca_file}: {exc}") from exc

    def _channel(self) -> grpc.aio.Channel:
        if self.config.insecure:
            return grpc.aio.insecure_channel(self.config.control_plane)
        workload = self.identity.current
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self._server_ca(),
            private_key=workload.key_pem,
            certificate_chain=workload.chain_pem,
        )
        return grpc.aio.secure_channel(self.config.control_plane, credentials)

    async def _start_identity(self) -> None:
        self.identity = IdentityManager(
            self.data_dir,
            self.config.node_id,
            control_plane=self.config.control_plane,
            join_address=self.config.join_address,
            server_ca_pem=self._server_ca(),
            join_token_file=self.config.join_token_file,
        )
        delay = 1.0
        while True:
            try:
                workload = await self.identity.ensure()
                break
            except IdentityError as exc:
                message = str(exc)
                if any(code in message for code in FATAL_JOIN):
                    raise AgentFailed(f"cannot join the mesh: {message}") from exc
                log.warning("identity: cannot join yet (%s); retrying in %.0fs", message, delay)
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
                raise _Stopped()
            except TimeoutError:
                delay = min(delay * 2, 30.0)
        self.local.workload = workload
        self.identity.listeners.append(self._on_identity)
        log.info("identity: %s, valid until %s", workload.spiffe_id, workload.not_after)

    def _on_identity(self, workload) -> None:
        if self.relay is not None:
            self.relay.on_identity(workload)

    async def _start_relay(self) -> None:
        cache = ConfigCache(self.data_dir / "xds-cache.json", self.config.node_id)
        self.relay = Relay(
            self.node(), cache, self._channel, None if self.config.insecure else self.local
        )
        if self.relay.served_from_cache:
            log.info("relay: loaded the last good config from %s", cache.path)
        sock = self.config.ads_socket
        sock.unlink(missing_ok=True)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self.relay.handler(),))
        if not server.add_insecure_port(f"unix:{sock}"):
            raise AgentFailed(f"--data-dir: cannot listen on {sock}")
        await server.start()
        os.chmod(sock, 0o660 if self._envoy_user() is None else 0o666)
        self._servers.append(server)

    async def _start_status(self) -> None:
        routes = {
            "/healthz": self._healthz,
            "/ready": self._ready,
            "/status": self._status,
            "/ports": self._ports,
            "/stats/prometheus": self._prometheus,
        }
        health = HealthServer(routes)
        try:
            self.status_port = await health.start(self.config.status_host, self.config.status_port)
        except OSError as exc:
            raise AgentFailed(
                f"--status-port: cannot listen on {self.config.status_host}:"
                f"{self.config.status_port}: {exc.strerror}"
            ) from exc
        self._servers.append(health)
        print(f"meshagent status port {self.config.status_host}:{self.status_port}", flush=True)

    def _envoy_user(self) -> int | None:
        if self.config.interception == "redirect" and os.geteuid() == 0:
            return self.config.proxy_uid
        return None

    def _install_redirect(self) -> None:
        # The agent's own connections (control plane, join) are exempt by destination, not
        # by UID: the app may well run as the same UID as the agent (root in a container).
        ignored_ips = set(self.config.egress_ignored_ips or DEFAULT_IGNORED_IPS)
        for target in (self.config.control_plane, self.config.join_address):
            if target:
                ignored_ips |= {a for a in _addresses(target) if ":" not in a}
        rules = RedirectRules(
            app_ports=self.config.app_ports,
            proxy_uid=self.config.proxy_uid,
            egress_ignored_ports=self.config.egress_ignored_ports,
            egress_ignored_ips=tuple(sorted(ignored_ips)),
        )
        self.iptables = Iptables()
        self.iptables.install(rules)

    def _start_envoy(self) -> None:
        config = bootstrap(
            node_id=self.config.node_id,
            cluster=self.config.name,
            metadata=self.config.node_metadata(),
            ads_socket=self.config.ads_socket,
            admin_port=self.config.admin_port,
        )
        path = write_bootstrap(self.data_dir / "envoy-bootstrap.json", config)
        user = self._envoy_user()
        if user is not None:
            os.chmod(self.data_dir, 0o711)  # Envoy's UID may reach the socket, not list the key
        self.envoy = EnvoySupervisor(
            self.config.envoy_binary,
            path,
            self.admin,
            log_path=self.config.envoy_log_file,
            log_level=self.config.envoy_log_level,
            drain_seconds=self.config.drain_seconds,
            user=user,
            concurrency=self.config.envoy_concurrency,
        )
        self._tasks.append(asyncio.create_task(self.envoy.run()))

    async def _write_ports(self) -> None:
        """ports.json: where the listeners are (explicit mode: the app's egress ports)."""
        last = None
        while True:
            await self.relay.changed.wait()
            self.relay.changed.clear()
            ports = self.relay.listener_ports()
            if ports != last:
                write_atomic(self.data_dir / "ports.json", json.dumps(ports).encode(), 0o644)
                last = ports

    async def _watch_ports(self, interval: float = 5.0) -> None:
        """Report listener ports another process listens on too (ports.py says why)."""
        from proxy_agent.ports import shared_ports

        while True:
            envoy = self.envoy
            ports = set(self.relay.listener_ports().values())
            if envoy is not None and envoy.running and ports:
                found = await asyncio.to_thread(shared_ports, ports, envoy.process.pid)
                if found != self.port_conflicts and found:
                    for port, pids in sorted(found.items()):
                        log.error(
                            "port %s: Envoy's listener shares it with pid %s (SO_REUSEPORT): "
                            "connections are split between them; give this agent other "
                            "ports or stop the other proxy",
                            port,
                            ", ".join(map(str, pids)),
                        )
                self.port_conflicts = found
            await asyncio.sleep(interval)

    # ------------------------------------------------------------ status port

    async def _healthz(self):
        envoy_ok = not self.run_envoy or (self.envoy is not None and self.envoy.running)
        body = {"agent": "ok", "envoy": "running" if envoy_ok else "not running"}
        return json_body(200 if envoy_ok else 503, body)

    async def _ready(self):
        """Ready: Envoy is LIVE, has ACKed listeners and clusters, and none is warming."""
        configured = self.relay is not None and self.relay.envoy_configured()
        live = not self.run_envoy or (await self.admin.live() and await self.admin.warmed())
        draining = self._stop.is_set()
        ready = configured and live and not draining and not self.port_conflicts
        body = {
            "ready": ready,
            "envoy_live": live,
            "configured": configured,
            "draining": draining,
            "control_plane_connected": bool(self.relay and self.relay.up_open),
        }
        if self.port_conflicts:
            body["shared_ports"] = {str(p): pids for p, pids in self.port_conflicts.items()}
        return json_body(200 if ready else 503, body)

    async def _status(self):
        body = {"node": self.config.node_id, "interception": self.config.interception}
        if self.identity is not None and self.identity.current is not None:
            current = self.identity.current
            body["identity"] = {
                "spiffeId": current.spiffe_id,
                "notAfter": current.not_after.isoformat(),
                "renewals": self.identity.renewals,
            }
        if self.relay is not None:
            body.update(self.relay.status())
        if self.envoy is not None:
            body["envoyRestarts"] = self.envoy.restarts
        body["sharedPorts"] = {str(p): pids for p, pids in self.port_conflicts.items()}
        return json_body(200, body)

    async def _ports(self):
        return json_body(200, self.relay.listener_ports() if self.relay else {})

    async def _prometheus(self):
        status, body, ctype = await self.admin.call("GET", "/stats/prometheus")
        return status, body, ctype or "text/plain; version=0.0.4"

    # ------------------------------------------------------------ run

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self._run()
        except _Stopped:
            log.info("meshagent stopped before it had joined")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _run(self) -> None:
        try:
            if not self.config.insecure:
                await self._start_identity()
                self._tasks.append(asyncio.create_task(self.identity.run()))
            await self._start_relay()
            self._tasks.append(asyncio.create_task(self.relay.run_upstream()))
            self._tasks.append(asyncio.create_task(self._write_ports()))
            await self._start_status()
            if self.config.interception == "redirect":
                self._install_redirect()
            if self.run_envoy:
                self._start_envoy()
                self._tasks.append(asyncio.create_task(self._watch_ports()))
            log.info("meshagent running for %s", self.config.node_id)
            print(f"meshagent ready node={self.config.node_id}", flush=True)
            await self._stop.wait()
            log.info("meshagent stopping")
            if self.envoy is not None:
                await self.envoy.drain_and_stop(self.config.drain_seconds)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        if self.envoy is not None:
            await self.envoy.terminate(2.0)
        if self.iptables is not None:
            self.iptables.remove()
        if self.relay is not None:
            self.relay.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.stop(0) if isinstance(server, grpc.aio.Server) else await server.stop()
        Path(self.config.ads_socket).unlink(missing_ok=True)
