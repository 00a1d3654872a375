"""The ADS service on grpc.aio: stream open (who, what variant, status, endpoints), then
the stream's events (requests from the client, new entries from the cache) go through the
pure protocol state (sotw.py / delta.py) and its encoded responses are written out.

Responses are pre-encoded bytes (cache.Resource): the method handlers' response serializer
passes them through, so a resource is encoded once per version for every stream.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import uuid
from collections import deque
from dataclasses import dataclass

import grpc
from asgiref.sync import sync_to_async
from django.db import close_old_connections
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from workers.compiler.context import CONSUMERS, INTERCEPTIONS
from workers.xds import auth
from workers.xds.cache import CacheRefresher, ConfigCache, Entry, Key
from workers.xds.delta import DeltaStream
from workers.xds.reaper import Reaper
from workers.xds.sotw import SotwStream
from workers.xds.status import Declared, StatusRecorder

log = logging.getLogger(__name__)

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
GRACE_SECONDS = 30.0
GC_THRESHOLD = 50_000  # allocations between collections of the youngest generation
_END = object()  # a stream's reader is done


def default_replica() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _ports(value) -> list[int]:
    if value in (None, ""):
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    try:
        ports = sorted({int(float(p)) for p in items})
    except (TypeError, ValueError):
        raise auth.Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node.metadata.ports must be a list of port numbers, not {value!r}.",
        ) from None
    if any(not 0 < p < 65536 for p in ports):
        raise auth.Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node.metadata.ports: {ports} has a port out of range.",
        )
    return ports


def _peer_address(peer: str) -> str:
    """'ipv4:127.0.0.1:5555' / 'ipv6:[::1]:5555' → the IP address."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return ""


def declared_of(node: base_pb2.Node, identity: auth.Identity, peer: str) -> Declared:
    """consumer, interception, instance id, address and ports from node.metadata."""
    metadata = auth.metadata_of(node)
    consumer = str(metadata.get("consumer") or "envoy")
    interception = str(metadata.get("interception") or "redirect")
    if consumer not in CONSUMERS:
        raise auth.Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node.metadata.consumer '{consumer}' must be one of {', '.join(CONSUMERS)}.",
        )
    if interception not in INTERCEPTIONS:
        raise auth.Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node.metadata.interception '{interception}' must be one of "
            f"{', '.join(INTERCEPTIONS)}.",
        )
    if identity.kind == "virtualGateway" and consumer != "envoy":
        raise auth.Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            "node.metadata.consumer: a virtual gateway's proxy is always Envoy (consumer=envoy).",
        )
    address = str(metadata.get("address") or _peer_address(peer))
    if address:
        from meshapi.services.endpoints import EndpointError, check_address

        try:
            address = check_address(address)
        except EndpointError as exc:
            raise auth.Refused(
                grpc.StatusCode.INVALID_ARGUMENT, f"node.metadata.{exc.message}"
            ) from exc
    instance_id = str(metadata.get("instance_id") or metadata.get("instanceId") or "")
    instance_id = instance_id or f"{address or 'unknown'}/{node.id}"
    variant_ports = (0, 0, 0)
    if interception == "explicit":
        variant_ports = (
            _port(metadata, "app_port"),
            _port(metadata, "ingress_port"),
            _port(metadata, "egress_port"),
        )
    return Declared(
        consumer,
        interception,
        instance_id[:255],
        address,
        _ports(metadata.get("ports")),
        variant_ports,
    )


def _port(metadata: dict, field: str) -> int:
    """An explicit-mode port from node.metadata: absent = 0 (the default)."""
    value = metadata.get(field)
    if value in (None, "", 0):
        return 0
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = -1
    if not 1 <= port <= 65535 or (isinstance(value, float) and value != port):
        raise auth.Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node.metadata.{field} must be a port number (1-65535), not {value!r}.",
        )
    return port


def ensure_variant(
    identity: auth.Identity,
    consumer: str,
    interception: str,
    ports: tuple[int, int, int] = (0, 0, 0),
) -> None:
    """The proxy must exist; a variant nobody asked for before is queued for compiling."""
    from meshapi.services import proxies
    from tenants.models import Tenant

    close_old_connections()
    tenant = Tenant.objects.get(pk=identity.tenant_id)
    try:
        ref = proxies.find_proxy(tenant, identity.mesh, identity.kind, identity.name)
    except proxies.ProxyNotFound as exc:
        raise auth.Refused(grpc.StatusCode.NOT_FOUND, str(exc)) from exc
    if proxies.request_variant(ref, consumer, interception, ports):
        from workers.tasks.compile import enqueue_compile

        enqueue_compile(ref.mesh.id)


@dataclass
class Session:
    identity: auth.Identity
    declared: Declared
    key: Key
    stream: str


class XdsServer:
    """The ADS service of one replica."""

    def __init__(
        self,
        *,
        insecure: bool = False,
        replica: str | None = None,
        grace_seconds: float = GRACE_SECONDS,
        poll_seconds: float | None = None,
    ) -> None:
        self.insecure = insecure
        self.replica = replica or default_replica()
        self.cache = ConfigCache()
        self.refresher = (
            CacheRefresher(self.cache, poll_seconds) if poll_seconds else CacheRefresher(self.cache)
        )
        self.status = StatusRecorder(self.replica, grace_seconds)
        self.reaper = Reaper(self.replica, grace_seconds)
        self._background: list[asyncio.Task] = []
        self._closing: set[asyncio.Task] = set()
        self._streams: set[asyncio.Task] = set()  # the tasks serving open streams

    def handler(self) -> grpc.GenericRpcHandler:
        def passthrough(data: bytes) -> bytes:
            return data

        return grpc.method_handlers_generic_handler(
            ADS_SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream_sotw,
                    request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                    response_serializer=passthrough,
                ),
                "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream_delta,
                    request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                    response_serializer=passthrough,
                ),
            },
        )

    async def start(self) -> None:
        # What start-up allocated (Django, protobuf descriptors, …) lives as long as the
        # process: out of the collector's way, a full collection under 1,000 streams costs
        # less.
        gc.freeze()
        # A push to 1,000 streams allocates a few objects per stream, most of them dropped
        # within the push. At the default first threshold (700) the collector ran ~20 times
        # per push, promoting what was still in use (entries, responses, pending writes),
        # and the promotions set off full collections of every stream's state (≈ 100 ms
        # each): 1.4 s of collector CPU over a 1,000-client benchmark run of 20 pushes.
        # Every 50,000 allocations, the same run collects 4 times (0.09 s): reference
        # counting frees a push's garbage before the collector looks at it.
        gc.set_threshold(GC_THRESHOLD, 20, 10)
        self.cache.loop = asyncio.get_running_loop()
        self.refresher.start()
        self._background.append(asyncio.create_task(self.status.run()))
        self._background.append(asyncio.create_task(self.reaper.run()))

    async def stop(self) -> None:
        # The gRPC server's stop cancels the streams still open, but their handlers may
        # not have run their ends yet (which record each close in a task of its own):
        # end them here, then wait for every close, so none is cut off at exit.
        streams = list(self._streams)
        for task in streams:
            task.cancel()
        if streams:
            await asyncio.gather(*streams, return_exceptions=True)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        for task in self._background:
            task.cancel()
        await self.status.flush()
        await asyncio.to_thread(self.refresher.stop)

    # -------------------------------------------------------------- streams

    # Coroutine handlers that write with context.write: no async generator layers
    # between a prepared response and the wire.
    async def stream_sotw(self, request_iterator, context) -> None:
        await self._stream(request_iterator, context, "sotw")

    async def stream_delta(self, request_iterator, context) -> None:
        await self._stream(request_iterator, context, "delta")

    async def _open(self, first, context) -> Session:
        node = first.node
        if not node.id:
            raise auth.Refused(
                grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry node.id."
            )
        if self.insecure:
            identity = await auth.authenticate_insecure(node)
        else:
            identity = await auth.authenticate_tls(node, context.auth_context())
        declared = declared_of(node, identity, context.peer())
        await sync_to_async(ensure_variant, thread_sensitive=False)(
            identity, declared.consumer, declared.interception, declared.variant_ports
        )
        key = Key(
            identity.account_id,
            identity.node_id,
            declared.consumer,
            declared.interception,
            *declared.variant_ports,
        )
        return Session(identity, declared, key, uuid.uuid4().hex)

    async def _stream(self, request_iterator, context, protocol: str) -> None:
        task = asyncio.current_task()
        self._streams.add(task)
        try:
            await self._serve_stream(request_iterator, context, protocol)
        finally:
            self._streams.discard(task)

    async def _serve_stream(self, request_iterator, context, protocol: str) -> None:
        iterator = request_iterator.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            return
        try:
            session = await self._open(first, context)
        except auth.Refused as exc:
            log.warning(
                "xds: refused a %s stream from %s: %s", protocol, context.peer(), exc.message
            )
            await context.abort(exc.code, exc.message)
            return
        opening = asyncio.ensure_future(
            self.status.open(session.identity, session.declared, session.stream, protocol)
        )
        try:
            reporter = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # Gone while its instance row was being written: record the close once it is.
            self._track(self._close_when_open(session, opening))
            raise
        log.info(
            "xds: %s stream %s opened by %s (%s) as %s",
            protocol,
            session.stream,
            session.identity.node_id,
            session.identity.peer,
            session.declared.instance_id,
        )
        handler = SotwStream(reporter) if protocol == "sotw" else DeltaStream(reporter)
        # Everything the protocol state does runs on the loop as events arrive: the cache's
        # notification and the reader call the handler directly and queue only the bytes to
        # write, so an ACK that needs no answer never wakes the writer (below). The queue
        # is a deque and a future made only while the writer waits (an asyncio.Queue's
        # bookkeeping was a few µs per push per stream).
        out: deque = deque()
        loop = asyncio.get_running_loop()
        waiting: list[asyncio.Future] = []

        def wake() -> None:
            if waiting:
                waiter = waiting.pop()
                if not waiter.done():
                    waiter.set_result(None)

        def send(responses: list[bytes]) -> None:
            if responses:
                out.extend(responses)
                wake()

        def fail(item: object) -> None:
            out.append(item)
            wake()

        def on_entry(entry: Entry) -> None:
            try:
                send(handler.on_entry(entry))
            except Exception as exc:  # noqa: BLE001 - raised by the writer: the stream fails
                fail(exc)

        async def read() -> None:
            try:
                async for request in iterator:
                    try:
                        send(handler.on_request(request))
                    except Exception as exc:  # noqa: BLE001 - as above
                        fail(exc)
            finally:  # the client closed, went away or cancelled (CancelledError too)
                fail(_END)

        reader: asyncio.Task | None = None
        try:
            entry = await self.cache.watch(session.key, on_entry)
            if entry is not None:
                on_entry(entry)
            send(handler.on_request(first))
            reader = asyncio.create_task(read())
            # Its error (the client went away) is the stream's end, not worth a log line.
            reader.add_done_callback(lambda task: task.cancelled() or task.exception())
            while True:
                if not out:
                    waiter = loop.create_future()
                    waiting.append(waiter)
                    await waiter
                    continue
                item = out.popleft()
                if item is _END:
                    break
                if isinstance(item, Exception):
                    raise item
                await context.write(item)
        finally:
            if reader is not None:
                reader.cancel()
            self.cache.unwatch(session.key, on_entry)
            log.info("xds: stream %s of %s closed", session.stream, session.identity.node_id)
            # A task of its own: the stream's task may be cancelled while it closes.
            self._track(self.status.close(session.identity, session.declared, reporter))

    def _track(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_when_open(self, session: Session, opening: asyncio.Future) -> None:
        try:
            reporter = await opening
        except Exception:  # noqa: BLE001 - nothing was written, nothing to close
            return
        await self.status.close(session.identity, session.declared, reporter)
