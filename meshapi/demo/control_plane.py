"""The whole control plane in the demo's own process: API, compiler and xDS server.

Embedded mode has no Redis: a compile publishes new versions to in-process subscribers
(workers.publish), so the xDS server must live in the process whose API writes trigger
the compiles. The API is served from a thread (Django's threaded WSGI server), the
compiler runs as in-process tasks on the thread that committed the write, and the
grpc.aio xDS server (ADS over mTLS, Renew, and Join on its own TLS port) runs its event
loop on another thread. `manage.py serve_xds` stays the production entry point; this
module is only the one-process arrangement the demo scene needs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import grpc
from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application

from meshapi.demo.server import PortInUse, ServerFailed

log = logging.getLogger(__name__)

TLS_HOSTS = ["localhost", "127.0.0.1"]
# Loggers whose lines go to the server log instead of the terminal while the scene runs.
QUIET = ("django.server", "django.request", "workers", "meshapi", "tenants", "kombu")


class ApiThread:
    """The API (both surfaces) on a threaded WSGI server, one thread per connection."""

    def __init__(self, host: str, port: int, log_path: Path) -> None:
        self.host, self.port = host, port
        client = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        self.url = f"http://[{client}]:{port}" if ":" in client else f"http://{client}:{port}"
        self.log_path = log_path
        self._server: ThreadedWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._handler: logging.Handler | None = None
        self._saved: dict[str, tuple[list[logging.Handler], bool]] = {}

    def start(self) -> None:
        app: WSGIHandler = get_wsgi_application()
        try:
            server = ThreadedWSGIServer(
                (self.host, self.port), WSGIRequestHandler, ipv6=":" in self.host
            )
        except OSError as exc:
            raise PortInUse(str(exc)) from exc
        server.set_app(app)
        self._server = server
        # WSGIRequestHandler logs each request on "django.server": keep it out of the
        # terminal (the scene prints its own story) and in the server log instead.
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = logging.FileHandler(self.log_path)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        for name in QUIET:
            logger = logging.getLogger(name)
            self._saved[name] = (list(logger.handlers), logger.propagate)
            logger.handlers = [self._handler]
            logger.propagate = False
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="api", daemon=True
        )
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._handler is not None:
            for name, (handlers, propagate) in self._saved.items():
                logger = logging.getLogger(name)
                logger.handlers, logger.propagate = handlers, propagate
            self._saved.clear()
            self._handler.close()
            self._handler = None


def _handlers(handlers) -> tuple:
    if isinstance(handlers, grpc.GenericRpcHandler):
        return (handlers,)
    return tuple(handlers)


class XdsThread:
    """ADS (mTLS, Renew) and Join (server TLS) on loopback, on an event loop of its own."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.ads = ""  # host:port once started
        self.join = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30) -> None:
        self._thread = threading.Thread(target=self._run, name="xds", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ServerFailed(f"the xDS server did not start within {timeout:.0f} s")
        if self._error is not None:
            raise ServerFailed(f"the xDS server failed to start: {self._error}")

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            log.exception("demo xDS server failed")
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        from tenants.identity.grpc_service import identity_handlers
        from workers.xds.auth import DynamicRoots, join_credentials
        from workers.xds.server import XdsServer

        xds = XdsServer(replica="demo", grace_seconds=5.0)
        ads = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        ads.add_generic_rpc_handlers((xds.handler(),))
        ads.add_generic_rpc_handlers(
            _handlers(identity_handlers(allow_join=False, allow_renew=True))
        )
        creds = await asyncio.to_thread(DynamicRoots(TLS_HOSTS).credentials)
        ads_port = ads.add_secure_port(f"{self.host}:0", creds)
        join = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        join.add_generic_rpc_handlers(
            _handlers(identity_handlers(allow_join=True, allow_renew=False))
        )
        join_port = join.add_secure_port(
            f"{self.host}:0", await asyncio.to_thread(join_credentials, TLS_HOSTS)
        )
        await xds.start()
        await ads.start()
        await join.start()
        self.ads, self.join = f"{self.host}:{ads_port}", f"{self.host}:{join_port}"
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        for server in (ads, join):
            await server.stop(grace=1.0)
        await xds.stop()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float) -> None:
        """Sleep up to `timeout`, less if the xDS thread ends."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self, timeout: float = 15) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop closed meanwhile
                pass
        if self._thread is not None:
            self._thread.join(timeout)
