"""The agent's small HTTP port: /healthz, /ready, /status, /ports and Envoy's stats.

A plain asyncio HTTP/1.1 server (one request per connection): four read-only endpoints do
not justify a web framework in a sidecar whose memory budget is tens of megabytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Handler = Callable[[], Awaitable[tuple[int, bytes, str]]]
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def json_body(status: int, body: dict) -> tuple[int, bytes, str]:
    return status, json.dumps(body, indent=1).encode() + b"\n", "application/json"


class HealthServer:
    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(self._serve, host, port)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            if len(parts) < 2:
                return
            method, path = parts[0], parts[1].split("?", 1)[0]
            handler = self.routes.get(path)
            if handler is None:
                status, body, ctype = 404, b"not found\n", "text/plain"
            elif method not in ("GET", "HEAD"):
                status, body, ctype = 405, b"GET only\n", "text/plain"
            else:
                try:
                    status, body, ctype = await handler()
                except Exception as exc:  # noqa: BLE001 - answer, do not drop the connection
                    log.warning("health: %s failed: %s", path, exc)
                    status, body, ctype = 503, f"{exc}\n".encode(), "text/plain"
            head = (
                f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
