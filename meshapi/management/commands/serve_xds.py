"""`manage.py serve_xds`: the xDS management server (ADS, state of the world and delta),
and the Identity service agents join through. See docs/xds.md.

With `--processes N` (N > 1) this process only supervises: it starts N replica processes
(`manage.py serve_xds --child I`, each a full replica named `<replica>-<I>`) that listen on
the same ports through SO_REUSEPORT, so the kernel spreads connections over them; it
forwards SIGTERM / SIGINT to them and restarts one that dies."""

import argparse
import asyncio
import faulthandler
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

log = logging.getLogger("workers.xds")

INSECURE_BANNER = (
    "!!! serve_xds --insecure: NO TLS, NO CLIENT AUTHENTICATION. Any local process can "
    "claim any proxy of any tenant by what it writes in node.metadata. For local "
    "development only; loopback only. !!!"
)
PROCESSES_ENV = "MESHPLANE_XDS_PROCESSES"
READY_SECONDS = 120.0  # a replica process must print its ready line within this
STABLE_SECONDS = 30.0  # a process that ran this long before dying is restarted afresh
RESTART_LIMIT = 5  # restarts in a row of a process that dies each time before STABLE_SECONDS
STOP_SECONDS = 30.0  # after SIGTERM, how long the processes get before SIGKILL


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _handlers(handlers) -> tuple:
    """identity_handlers may give one generic handler or several."""
    if isinstance(handlers, grpc.GenericRpcHandler):
        return (handlers,)
    return tuple(handlers)


def _processes(value: int | None) -> int:
    """--processes, else MESHPLANE_XDS_PROCESSES, else 1."""
    if value is None:
        raw = os.environ.get(PROCESSES_ENV, "").strip()
        if not raw:
            return 1
        try:
            value = int(raw)
        except ValueError:
            raise CommandError(f"{PROCESSES_ENV} must be a whole number, not {raw!r}.") from None
        if value < 1:
            raise CommandError(f"{PROCESSES_ENV} must be at least 1, not {value}.")
        return value
    if value < 1:
        raise CommandError(f"--processes must be at least 1, not {value}.")
    return value


def _reserve(host: str, port: int, flag: str) -> socket.socket:
    """A socket bound (not listening) to host:port with SO_REUSEPORT: it holds the port
    (a port picked here when `port` is 0) for the replica processes, which bind it with
    SO_REUSEPORT too, and keeps any listener without that option off it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise CommandError(f"{flag}: cannot listen on {host}:{port}: {exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise CommandError(f"{flag}: cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


@dataclass
class _Slot:
    """One replica process of the supervisor, and its restarts."""

    index: int
    replica: str
    proc: subprocess.Popen | None = None
    started: float = 0.0
    ready: threading.Event = field(default_factory=threading.Event)
    failures: int = 0  # deaths in a row, each before STABLE_SECONDS
    restart_at: float = 0.0
    announced: bool = False


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """N `serve_xds --child` processes: started, watched, restarted, stopped."""

    def __init__(self, argv: list[str], slots: list[_Slot], stderr) -> None:
        self.argv = argv  # the child command line without --replica / --child
        self.slots = slots
        self.stderr = stderr

    def _say(self, text: str) -> None:
        self.stderr.write(f"serve_xds: {text}")
        self.stderr.flush()

    def _spawn(self, slot: _Slot) -> None:
        cmd = [*self.argv, "--replica", slot.replica, "--child", str(slot.index)]
        slot.ready = threading.Event()
        slot.announced = False
        # stdin: a pipe only this process writes to; its EOF (this process gone, even
        # killed) stops the child. stderr: this process's own.
        slot.proc = subprocess.Popen(
            cmd, cwd=settings.BASE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        slot.started = time.monotonic()
        threading.Thread(target=self._read_ready, args=(slot.proc, slot.ready), daemon=True).start()

    @staticmethod
    def _read_ready(proc: subprocess.Popen, ready: threading.Event) -> None:
        with proc.stdout:  # closed here, at the child's EOF
            for line in proc.stdout:
                if line.startswith(b"serve_xds ready"):
                    ready.set()

    def start(self, stop: threading.Event) -> bool:
        """Start every process and wait until each is ready; False if asked to stop."""
        for slot in self.slots:
            self._spawn(slot)
        deadline = time.monotonic() + READY_SECONDS
        while not all(slot.ready.is_set() for slot in self.slots):
            if stop.wait(0.05):
                return False
            for slot in self.slots:
                code = slot.proc.poll()
                if code is not None:
                    raise CommandError(
                        f"--processes: replica process {slot.replica} exited before it was "
                        f"ready ({_exit_text(code)}); its errors are above."
                    )
            if time.monotonic() > deadline:
                raise CommandError(
                    f"--processes: not every replica process was ready within "
                    f"{READY_SECONDS:.0f} s."
                )
        for slot in self.slots:
            slot.announced = True
        return True

    def watch(self, stop: threading.Event) -> None:
        """Restart processes that die, until `stop` is set; CommandError when one keeps
        dying."""
        while not stop.wait(0.2):
            now = time.monotonic()
            for slot in self.slots:
                if slot.proc is None:
                    if now >= slot.restart_at:
                        self._spawn(slot)
                    continue
                code = slot.proc.poll()
                if code is None:
                    if not slot.announced and slot.ready.is_set():
                        slot.announced = True
                        self._say(f"restarted {slot.replica} (pid {slot.proc.pid}).")
                    elif not slot.announced and now - slot.started > READY_SECONDS:
                        self._say(f"{slot.replica} was not ready in {READY_SECONDS:.0f} s.")
                        slot.proc.kill()
                    continue
                slot.failures = slot.failures + 1 if now - slot.started < STABLE_SECONDS else 1
                if slot.failures > RESTART_LIMIT:
                    raise CommandError(
                        f"--processes: replica process {slot.replica} died {slot.failures} "
                        f"times in a row, each within {STABLE_SECONDS:.0f} s of starting "
                        f"(last: {_exit_text(code)}); giving up. Its errors are above."
                    )
                delay = min(0.5 * 2 ** (slot.failures - 1), 10.0)
                self._say(
                    f"{slot.replica} (pid {slot.proc.pid}) died ({_exit_text(code)}); "
                    f"restarting it in {delay:g} s."
                )
                slot.proc.stdin.close()
                slot.proc = None
                slot.restart_at = now + delay

    def stop(self) -> bool:
        """SIGTERM to every process, SIGKILL to those still running after STOP_SECONDS;
        True if every one stopped by itself."""
        running = [s.proc for s in self.slots if s.proc is not None and s.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        clean = True
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                clean = False
        for slot in self.slots:
            if slot.proc is not None:
                slot.proc.stdin.close()
        return clean


class Command(BaseCommand):
    help = "Serve ADS (xDS SotW + delta) to proxies, and the Identity service for joining."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0", help="Address to listen on.")
        parser.add_argument(
            "--port", type=int, default=15010, help="ADS port (mTLS; 0 picks a free port)."
        )
        parser.add_argument(
            "--join-port",
            type=int,
            default=None,
            help="Identity Join port (server TLS only: the caller has no certificate yet).",
        )
        parser.add_argument(
            "--insecure",
            action="store_true",
            help="Plaintext ADS on loopback, tenant from node.metadata: local development only.",
        )
        parser.add_argument(
            "--tls-host",
            action="append",
            default=None,
            help="A name the control plane's certificate is for (repeatable).",
        )
        parser.add_argument("--replica", default=None, help="This replica's name (status).")
        parser.add_argument(
            "--grace",
            type=float,
            default=30.0,
            help="Seconds after a stream closes before its endpoints are deregistered.",
        )
        parser.add_argument(
            "--poll", type=float, default=30.0, help="Fallback poll of stored versions (s)."
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=None,
            help=(
                "Replica processes sharing the ports through SO_REUSEPORT, each named "
                f"<replica>-<i> (default: ${PROCESSES_ENV}, else 1)."
            ),
        )
        # One of the processes of a `--processes N` parent (binds with SO_REUSEPORT).
        parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)

    def handle(self, *args, **options):
        # `kill -USR1 <pid>` writes every thread's stack to stderr: what a stuck replica does.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        if options["insecure"]:
            if options["host"] == "0.0.0.0":
                options["host"] = "127.0.0.1"
            if not _is_loopback(options["host"]):
                raise CommandError(
                    f"--host: --insecure serves only loopback, not {options['host']}."
                )
            if options["join_port"] is not None:
                raise CommandError("--join-port: Join needs TLS; it is not served with --insecure.")
        if options["child"] is None:
            processes = _processes(options["processes"])
            if processes > 1:
                self._supervise(options, processes)
                return
        try:
            asyncio.run(self._serve(options))
        except KeyboardInterrupt:
            pass

    def _supervise(self, options, processes: int) -> None:
        from workers.xds.server import default_replica

        host = options["host"]
        replica = options["replica"] or default_replica()
        held = [_reserve(host, options["port"], "--port")]
        port = held[0].getsockname()[1]
        join_port = None
        if options["join_port"] is not None:
            held.append(_reserve(host, options["join_port"], "--join-port"))
            join_port = held[1].getsockname()[1]
        argv = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "serve_xds"]
        argv += ["--host", host, "--port", str(port)]
        argv += ["--grace", repr(options["grace"]), "--poll", repr(options["poll"])]
        if options["insecure"]:
            argv.append("--insecure")
            log.warning(INSECURE_BANNER)
            self.stderr.write(INSECURE_BANNER)
        if join_port is not None:
            argv += ["--join-port", str(join_port)]
        for name in options["tls_host"] or []:
            argv += ["--tls-host", name]
        slots = [_Slot(i, f"{replica}-{i}") for i in range(1, processes + 1)]
        supervisor = Supervisor(argv, slots, self.stderr)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            if supervisor.start(stop):
                mode = "insecure" if options["insecure"] else "mtls"
                pids = ",".join(str(s.proc.pid) for s in slots)
                ready = f"serve_xds ready replica={replica} mode={mode} ads={host}:{port}"
                if join_port is not None:
                    ready += f" join={host}:{join_port}"
                self.stdout.write(f"{ready} processes={processes} pids={pids}")
                self.stdout.flush()
                supervisor.watch(stop)
            log.info("serve_xds: stopping %d replica processes", processes)
        finally:
            clean = supervisor.stop()
            for sock in held:
                sock.close()
        if not clean:
            raise CommandError(f"--processes: a replica process did not stop in {STOP_SECONDS} s.")

    async def _serve(self, options) -> None:
        from workers.xds.server import XdsServer

        child = options["child"] is not None
        reuseport = 1 if child else 0  # never share a port by accident
        if options["replica"]:
            await self._reap_previous(options["replica"])
        xds = XdsServer(
            insecure=options["insecure"],
            replica=options["replica"],
            grace_seconds=options["grace"],
            poll_seconds=options["poll"],
        )
        host = options["host"]
        hosts = options["tls_host"] or ["localhost", "127.0.0.1"]
        servers: list[grpc.aio.Server] = []
        ads = grpc.aio.server(options=[("grpc.so_reuseport", reuseport)])
        ads.add_generic_rpc_handlers((xds.handler(),))
        if options["insecure"]:
            log.warning(INSECURE_BANNER)
            if not child:  # the parent printed it once for all
                self.stderr.write(INSECURE_BANNER)
            port = ads.add_insecure_port(f"{host}:{options['port']}")
        else:
            from tenants.identity.grpc_service import identity_handlers
            from workers.xds.auth import DynamicRoots

            roots = DynamicRoots(hosts)
            creds = await asyncio.to_thread(roots.credentials)
            ads.add_generic_rpc_handlers(
                _handlers(identity_handlers(allow_join=False, allow_renew=True))
            )
            port = ads.add_secure_port(f"{host}:{options['port']}", creds)
        if not port:
            raise CommandError(f"--port: cannot listen on {host}:{options['port']}.")
        servers.append(ads)
        join_port = None
        if options["join_port"] is not None:
            from tenants.identity.grpc_service import identity_handlers
            from workers.xds.auth import join_credentials

            join = grpc.aio.server(options=[("grpc.so_reuseport", reuseport)])
            join.add_generic_rpc_handlers(
                _handlers(identity_handlers(allow_join=True, allow_renew=False))
            )
            creds = await asyncio.to_thread(join_credentials, hosts)
            join_port = join.add_secure_port(f"{host}:{options['join_port']}", creds)
            if not join_port:
                raise CommandError(f"--join-port: cannot listen on {host}:{options['join_port']}.")
            servers.append(join)
        await xds.start()
        for server in servers:
            await server.start()
        mode = "insecure" if options["insecure"] else "mtls"
        ready = f"serve_xds ready replica={xds.replica} mode={mode} ads={host}:{port}"
        if join_port:
            ready += f" join={host}:{join_port}"
        self.stdout.write(ready)
        self.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if child:
            _stop_when_parent_goes(loop, stop)
        await stop.wait()
        log.info("serve_xds: stopping")
        for server in servers:
            await server.stop(grace=1.0)
        await xds.stop()

    @staticmethod
    async def _reap_previous(replica: str) -> None:
        """A replica started under a name it was given takes the name over from a previous
        process that is gone (restarted by --processes' parent, by systemd, by a container
        runtime keeping the pod's name): what that one left connected is disconnected and
        deregistered now. Another replica's reaper would never do it, as the name keeps
        beating. Two live processes must never share a replica name."""
        from asgiref.sync import sync_to_async

        from workers.xds.reaper import reap

        try:
            await sync_to_async(reap, thread_sensitive=False)(replica)
        except Exception:
            log.exception("xds: could not reap what a previous %s left connected", replica)


def _stop_when_parent_goes(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set `stop` when stdin (the parent's pipe) reaches EOF: the parent is gone."""

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # the loop already closed
            pass

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
