"""The ADS relay: one stream up to the control plane, Envoy's stream down on a Unix socket.

Both sides speak state-of-the-world ADS. Why SotW rather than delta: every SotW response
is the complete state of its type (all listeners and clusters; every subscribed route
configuration, endpoint set and secret), so the on-disk cache is simply the last response
Envoy accepted per type, and the relay stays a thin translation in which Envoy's own ACKs
and NACKs (version, nonce, error detail) go upstream as they are; a reconnect needs no
per-resource bookkeeping either, because the first request of a type carries the version
held and the server sends nothing when it is current (workers/xds/sotw.py).

What the relay adds:
- Envoy's subscriptions become the upstream subscriptions; an upstream response goes to
  Envoy with a nonce of the relay's own, and Envoy's answer to it goes upstream as the
  answer to the upstream nonce (so the control plane's status shows Envoy's verdict and
  error text). A response for a version Envoy already holds is ACKed without a push.
- Secrets: `meshplane:identity` (the workload certificate and key) is added by the agent
  and never asked of the control plane; `meshplane:mesh-ca` comes from the control plane
  when it serves it, otherwise from the trust bundle the agent got with its certificate.
  A renewal pushes a new secret version to Envoy: hitless rotation.
- The last accepted configuration is written to disk (cache.py) on every ACK, and served
  to Envoy when the control plane is away, including after the agent restarts.
- The upstream stream lives on its own, reconnecting with jittered backoff; Envoy's stream
  to the agent is unaffected by control-plane outages.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from proxy_agent.cache import ConfigCache, TypeConfig
from proxy_agent.identity import Workload

log = logging.getLogger(__name__)

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ADS_METHOD = f"/{ADS_SERVICE}/StreamAggregatedResources"

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)  # make-before-break
WILDCARD_TYPES = (LISTENER, CLUSTER)
SHORT = {CLUSTER: "clusters", ENDPOINT: "endpoints", LISTENER: "listeners", ROUTE: "routes"}
SHORT[SECRET] = "secrets"

IDENTITY_SECRET = "meshplane:identity"
MESH_CA_SECRET = "meshplane:mesh-ca"

RECONNECT_MIN, RECONNECT_MAX = 0.5, 15.0


def _fields(data: bytes):
    """(field number, wire type, value) of a serialized message's top level: enough to read
    names and ports without importing every Envoy message class (they cost the agent about
    14 MB of memory; the agent only passes resources through)."""
    i, n = 0, len(data)

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7

    while i < n:
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 2:
            size = varint()
            yield number, wire, data[i : i + size]
            i += size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _field(data: bytes, number: int):
    for n, _wire, value in _fields(data):
        if n == number:
            return value
    return None


def resource_name(type_url: str, resource: any_pb2.Any) -> str:
    """Every type the relay carries has its name as field 1 (`name`, or `cluster_name` for
    ClusterLoadAssignment)."""
    value = _field(resource.value, 1)
    return value.decode() if isinstance(value, bytes) else ""


def listener_port(resource: any_pb2.Any) -> int | None:
    """Listener.address (2) → Address.socket_address (1) → SocketAddress.port_value (3)."""
    address = _field(resource.value, 2)
    socket_address = _field(address, 1) if isinstance(address, bytes) else None
    port = _field(socket_address, 3) if isinstance(socket_address, bytes) else None
    return port if isinstance(port, int) else None


def subscription(type_url: str, names) -> frozenset[str] | None:
    """None is a wildcard (listeners and clusters with no names, or '*')."""
    names = list(names)
    if "*" in names or (not names and type_url in WILDCARD_TYPES):
        return None
    return frozenset(names)


def _pack(message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message, deterministic=True)
    return out


class LocalSecrets:
    """The secrets the agent serves itself, from its current Workload."""

    def __init__(self) -> None:
        self.workload: Workload | None = None

    @property
    def version(self) -> str:
        return self.workload.version if self.workload else "none"

    def resources(self) -> dict[str, any_pb2.Any]:
        if self.workload is None:
            return {}
        w = self.workload
        out = {
            IDENTITY_SECRET: _pack(
                secret_pb2.Secret(
                    name=IDENTITY_SECRET,
                    tls_certificate=common_pb2.TlsCertificate(
                        certificate_chain=base_pb2.DataSource(inline_bytes=w.chain_pem),
                        private_key=base_pb2.DataSource(inline_bytes=w.key_pem),
                    ),
                )
            )
        }
        if w.bundle_pem:
            out[MESH_CA_SECRET] = _pack(
                secret_pb2.Secret(
                    name=MESH_CA_SECRET,
                    validation_context=common_pb2.CertificateValidationContext(
                        trusted_ca=base_pb2.DataSource(inline_bytes=w.bundle_pem)
                    ),
                )
            )
        return out


@dataclass
class Current:
    """What the relay would serve Envoy for a type: the control plane's latest (with its
    nonce, on upstream stream `gen`) or, from the cache, the last good (nonce None)."""

    version: str
    resources: dict[str, any_pb2.Any]
    nonce: str | None = None
    gen: int = 0


@dataclass
class Sent:
    nonce: str
    version: str  # as Envoy sees it
    current: Current
    names: frozenset[str] | None
    answered: bool = False
    # The resource names the response carried: one version of a non-wildcard type may be
    # sent twice with different contents (before and after a subscription change).
    included: frozenset[str] = frozenset()


@dataclass
class UpState:
    nonce: str = ""
    version: str = ""
    answered: bool = True
    requested: tuple[str, ...] | None = ()


@dataclass
class Downstream:
    """One Envoy stream."""

    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    names: dict[str, frozenset[str] | None] = field(default_factory=dict)
    has: dict[str, str] = field(default_factory=dict)  # the version Envoy holds
    sent: dict[str, Sent] = field(default_factory=dict)  # latest per type
    acked: dict[str, str] = field(default_factory=dict)


@dataclass
class Rejection:
    type_url: str
    version: str
    message: str
    at: float


class Relay:
    """The relay between one upstream ADS stream and the local Envoy's."""

    def __init__(
        self,
        node,
        cache: ConfigCache,
        channel_factory: Callable[[], grpc.aio.Channel],
        local: LocalSecrets | None = None,
    ) -> None:
        self.node = node
        self.cache = cache
        self.channel_factory = channel_factory
        self.local = local
        self.good: dict[str, TypeConfig] = cache.load()
        self.current: dict[str, Current] = {
            t: Current(c.version, dict(c.resources)) for t, c in self.good.items()
        }
        self.served_from_cache = bool(self.good)
        self.downstream: Downstream | None = None
        self.up: dict[str, UpState] = {}
        self.up_gen = 0
        self.up_connected = False  # a stream is being attempted or is open
        self.up_open = False  # ... and it is open
        self.up_error = ""
        self.up_queue: asyncio.Queue | None = None
        self.rejections: list[Rejection] = []
        self.upstream_acks = 0
        self.upstream_responses = 0
        self._nonces = itertools.count(1)
        self._stopping = False
        self.changed = asyncio.Event()

    # ================================================================ Envoy side

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            ADS_SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self._envoy_stream,
                    request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                    response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString,
                )
            },
        )

    async def _envoy_stream(self, request_iterator, context):
        ds = Downstream()
        self.downstream = ds
        log.info("relay: Envoy connected")

        async def read() -> None:
            try:
                async for request in request_iterator:
                    self.on_envoy_request(ds, request)
            except Exception as exc:  # noqa: BLE001 - Envoy went away
                log.info("relay: Envoy stream ended: %s", exc)
            finally:
                ds.queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                response = await ds.queue.get()
                if response is None:
                    break
                yield response
        finally:
            reader.cancel()
            if self.downstream is ds:
                self.downstream = None
            log.info("relay: Envoy disconnected")

    def on_envoy_request(self, ds: Downstream, request) -> None:
        type_url = request.type_url
        if type_url not in TYPE_ORDER:
            log.warning("relay: Envoy asked for unsupported type %s", type_url)
            return
        first = type_url not in ds.names
        if not first and request.response_nonce:
            sent = ds.sent.get(type_url)
            if sent is None or sent.nonce != request.response_nonce:
                return  # stale: answers a response since superseded
        ds.names[type_url] = subscription(type_url, request.resource_names)
        if first:
            ds.has[type_url] = request.version_info
        forwarded = False
        sent = ds.sent.get(type_url)
        if request.response_nonce and sent is not None and sent.nonce == request.response_nonce:
            if not sent.answered:
                sent.answered = True
                if request.HasField("error_detail"):
                    forwarded = self._rejected(ds, type_url, sent, request)
                else:
                    ds.has[type_url] = ds.acked[type_url] = sent.version
                    self._accepted(type_url, sent)
                    forwarded = self._verdict_upstream(type_url, sent.current, None)
        if not forwarded:
            self._sync_subscription(type_url)
        self._maybe_push(ds, type_url)

    def _rejected(self, ds: Downstream, type_url: str, sent: Sent, request) -> bool:
        message = request.error_detail.message
        log.warning(
            "relay: Envoy rejected %s version %s: %s", SHORT[type_url], sent.version, message
        )
        self.rejections.append(Rejection(type_url, sent.version, message, time.time()))
        del self.rejections[:-20]
        forwarded = self._verdict_upstream(type_url, sent.current, request.error_detail)
        # Envoy keeps what it had; so does the relay (a restarted Envoy gets the good one).
        good = self.good.get(type_url)
        if good is not None:
            self.current[type_url] = Current(good.version, dict(good.resources))
        else:
            self.current.pop(type_url, None)  # nothing good yet: better nothing than that
        ds.has[type_url] = request.version_info
        sent.version = request.version_info  # nothing to re-send until something changes
        composed = self._compose(type_url, ds.names.get(type_url))
        sent.included = composed[2] if composed else frozenset()
        return forwarded

    def _accepted(self, type_url: str, sent: Sent) -> None:
        current = sent.current
        if not current.version and not current.resources:
            return
        if type_url in WILDCARD_TYPES:
            resources = dict(current.resources)
        else:
            previous = self.good.get(type_url)
            resources = dict(previous.resources) if previous else {}
            resources.update(current.resources)
            if sent.names is not None:
                resources = {n: r for n, r in resources.items() if n in sent.names}
        new = TypeConfig(current.version, resources)
        old = self.good.get(type_url)
        if old is not None and old.version == new.version and old.resources == new.resources:
            return
        self.good[type_url] = new
        try:
            self.cache.save(self.good)
        except OSError as exc:
            log.error("relay: cannot write the config cache %s: %s", self.cache.path, exc)
        self.changed.set()

    def _compose(
        self, type_url: str, names
    ) -> tuple[str, list[any_pb2.Any], frozenset[str]] | None:
        current = self.current.get(type_url)
        resources = dict(current.resources) if current else {}
        version = current.version if current else ""
        if type_url == SECRET and self.local is not None:
            local = self.local.resources()
            if MESH_CA_SECRET in resources:
                local.pop(MESH_CA_SECRET, None)  # the control plane's wins
            resources.update(local)
            version = f"{version or '-'}+{self.local.version}"
        if current is None and not resources:
            return None
        if names is None:
            included = sorted(resources)
        else:
            included = [n for n in sorted(names) if n in resources]
        return version, [resources[n] for n in included], frozenset(included)

    def _maybe_push(self, ds: Downstream, type_url: str) -> None:
        if type_url not in ds.names:
            return
        names = ds.names[type_url]
        if names is not None and not names:
            return
        composed = self._compose(type_url, names)
        if composed is None:
            return
        version, chosen, included = composed
        if not chosen and type_url not in WILDCARD_TYPES:
            return  # none of the names Envoy wants is known yet
        current = self.current.get(type_url) or Current("", {})
        sent = ds.sent.get(type_url)
        if (
            sent is not None
            and sent.version == version
            and sent.names == names
            and sent.included == included
        ):
            return
        if sent is None and ds.has.get(type_url) == version:
            # Envoy (re)connected holding exactly this version: nothing to send.
            ds.sent[type_url] = Sent("", version, current, names, True, included)
            ds.acked[type_url] = version
            self._verdict_upstream(type_url, current, None)
            return
        nonce = f"a{next(self._nonces)}"
        ds.sent[type_url] = Sent(nonce, version, current, names, False, included)
        ds.queue.put_nowait(
            discovery_pb2.DiscoveryResponse(
                version_info=version, resources=chosen, type_url=type_url, nonce=nonce
            )
        )

    def on_identity(self, workload: Workload) -> None:
        """A new certificate: push the new secrets to Envoy (hitless rotation)."""
        if self.local is None:
            return
        self.local.workload = workload
        if self.downstream is not None:
            self._maybe_push(self.downstream, SECRET)

    # ================================================================ upstream side

    def _upstream_names(self, type_url: str) -> tuple[str, ...] | None:
        """What to ask the control plane for: Envoy's subscription (or, while Envoy is not
        connected, the cached one), minus what the agent serves itself."""
        if type_url in WILDCARD_TYPES:
            return None
        ds = self.downstream
        if ds is not None and type_url in ds.names:
            names = ds.names[type_url]
            if names is None:
                return None
        elif type_url in self.good:
            names = frozenset(self.good[type_url].resources)
        else:
            names = frozenset()
        if type_url == SECRET:
            names = names - {IDENTITY_SECRET}
        return tuple(sorted(names))

    def _send_up(self, request) -> None:
        if self.up_queue is not None:
            self.up_queue.put_nowait(request)

    def _verdict_upstream(self, type_url: str, current: Current, error) -> bool:
        """Envoy's ACK (error None) or NACK of `current`, as the answer to its upstream nonce."""
        state = self.up.get(type_url)
        if (
            not self.up_connected
            or state is None
            or current.nonce is None
            or current.gen != self.up_gen
            or current.nonce != state.nonce
            or state.answered
        ):
            return False
        state.answered = True
        names = self._upstream_names(type_url)
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url, response_nonce=state.nonce, resource_names=names or ()
        )
        if error is None:
            request.version_info = current.version
            self.upstream_acks += 1
        else:
            good = self.good.get(type_url)
            request.version_info = good.version if good else ""
            request.error_detail.CopyFrom(error)
        state.requested = names
        self._send_up(request)
        return True

    def _sync_subscription(self, type_url: str) -> None:
        """Tell the control plane a changed subscription (or a type's first one)."""
        if not self.up_connected:
            return
        names = self._upstream_names(type_url)
        state = self.up.get(type_url)
        if state is not None and state.requested == names:
            return
        if state is None and names is not None and not names:
            return  # nothing to ask for
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names or ())
        if state is None:
            good = self.good.get(type_url)
            request.version_info = good.version if good else ""
            state = self.up[type_url] = UpState()
        state.requested = names
        self._send_up(request)

    def on_upstream_response(self, response) -> None:
        type_url = response.type_url
        if type_url not in TYPE_ORDER:
            return
        self.upstream_responses += 1
        state = self.up.setdefault(type_url, UpState())
        state.nonce, state.version, state.answered = response.nonce, response.version_info, False
        resources = {resource_name(type_url, r): r for r in response.resources}
        current = Current(response.version_info, resources, response.nonce, self.up_gen)
        self.current[type_url] = current
        ds = self.downstream
        if ds is not None and type_url in ds.names:
            self._maybe_push(ds, type_url)
            sent = ds.sent.get(type_url)
            if sent is not None and sent.answered and ds.has.get(type_url) == sent.version:
                # Nothing new for Envoy (it holds this very version): ACK for it.
                self._verdict_upstream(type_url, current, None)
        else:
            good = self.good.get(type_url)
            if good is not None and good.version == current.version:
                self._verdict_upstream(type_url, current, None)
        self.changed.set()

    async def _requests(self, queue: asyncio.Queue):
        while True:
            request = await queue.get()
            if request is None:
                return
            yield request

    def _open_upstream(self) -> asyncio.Queue:
        self.up_gen += 1
        self.up = {}
        queue: asyncio.Queue = asyncio.Queue()
        self.up_queue = queue
        self.up_connected = True
        first = True
        for type_url in TYPE_ORDER:
            names = self._upstream_names(type_url)
            if names is not None and not names:
                continue
            good = self.good.get(type_url)
            request = discovery_pb2.DiscoveryRequest(
                type_url=type_url,
                version_info=good.version if good else "",
                resource_names=names or (),
            )
            if first:
                request.node.CopyFrom(self.node)
                first = False
            self.up[type_url] = UpState(requested=names)
            queue.put_nowait(request)
        return queue

    async def run_upstream(self) -> None:
        """Hold the upstream stream forever, reconnecting with jittered backoff."""
        delay = RECONNECT_MIN
        while not self._stopping:
            channel = self.channel_factory()
            got_response = False
            ready: asyncio.Task | None = None
            try:
                queue = self._open_upstream()
                rpc = channel.stream_stream(
                    ADS_METHOD,
                    request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                    response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
                )
                call = rpc(self._requests(queue))
                ready = asyncio.create_task(self._connected(channel))
                async for response in call:
                    if not got_response:
                        got_response = True
                        self.up_error, self.up_open = "", True
                    delay = RECONNECT_MIN
                    self.on_upstream_response(response)
                self.up_error = "the control plane closed the stream"
            except grpc.aio.AioRpcError as exc:
                self.up_error = f"{exc.code().name}: {exc.details()}"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving Envoy whatever happened
                log.exception("relay: upstream stream failed")
                self.up_error = str(exc)
            finally:
                if ready is not None:
                    ready.cancel()
                self.up_connected = self.up_open = False
                if self.up_queue is not None:
                    self.up_queue.put_nowait(None)
                    self.up_queue = None
                await channel.close()
            if self._stopping:
                break
            wait = delay * random.uniform(0.5, 1.0)
            log.warning(
                "relay: upstream stream down (%s); serving the last good config; "
                "reconnecting in %.1fs",
                self.up_error,
                wait,
            )
            self.changed.set()
            await asyncio.sleep(wait)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _connected(self, channel: grpc.aio.Channel) -> None:
        """The channel is up (TLS done): the stream is open unless the server refuses it,
        which ends the call with an error. A resumed stream may bring no response at all
        (nothing changed), so this, not a first response, tells that we are connected."""
        await channel.channel_ready()
        await asyncio.sleep(0.2)  # a refusal at stream open arrives at once
        if self.up_connected:
            self.up_error, self.up_open = "", True
            log.info("relay: upstream stream open to %s", self.node.id)
            self.changed.set()

    def stop(self) -> None:
        self._stopping = True

    # ================================================================ views

    def listener_ports(self) -> dict[str, int]:
        """Listener name → port, from what Envoy accepted (explicit mode: where to send)."""
        good = self.good.get(LISTENER)
        out: dict[str, int] = {}
        for name, resource in sorted((good.resources if good else {}).items()):
            port = listener_port(resource)
            if port is not None:
                out[name] = port
        return out

    def status(self) -> dict:
        ds = self.downstream
        return {
            "upstream": {
                "connected": self.up_open,
                "error": self.up_error,
                "versions": {SHORT[t]: s.version for t, s in self.up.items() if s.version},
                "responses": self.upstream_responses,
                "acks": self.upstream_acks,
            },
            "envoy": {
                "connected": ds is not None,
                "acked": {SHORT[t]: v for t, v in (ds.acked if ds else {}).items()},
            },
            "cached": {SHORT[t]: c.version for t, c in self.good.items()},
            "rejections": [
                {"type": SHORT[r.type_url], "version": r.version, "message": r.message}
                for r in self.rejections
            ],
        }

    def envoy_configured(self) -> bool:
        ds = self.downstream
        return ds is not None and LISTENER in ds.acked and CLUSTER in ds.acked
