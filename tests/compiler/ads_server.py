"""A minimal state-of-the-world ADS server for tests: serves one compiled Snapshot.

`StreamAggregatedResources` answers each DiscoveryRequest with the snapshot's resources of
the requested type (listeners and clusters: all of them, so the client validates every
one; route configurations and endpoints: the names requested), the type's content-hash
version as `version_info` and a fresh nonce. It answers a type again only when the
requested names change, never a NACK (no resend loop), and records every request so a test
can tell ACKs (`version_info` and `response_nonce` of a response it was sent, no
`error_detail`) from NACKs (`error_detail` set).

    with AdsServer(snapshot) as server:        # listens on 127.0.0.1:<free port>
        ... point a client at server.address ...
        server.wait_settled(expected_names, timeout=20)
        server.nacks()                    # requests with error_detail
        server.latest_sent()              # the last response per (stream, type) ...
        server.acked(sent)                # ... and whether the client ACKed it
        server.requested_names(type_url), server.node_ids(), server.transcript()
"""

import threading
import time
from concurrent import futures
from dataclasses import dataclass

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from workers.compiler import xds
from workers.compiler.snapshot import Snapshot

# Types whose state-of-the-world response carries every resource, whatever was asked.
ALL_RESOURCES = (xds.LISTENER, xds.CLUSTER)


@dataclass(frozen=True)
class Recorded:
    """One DiscoveryRequest as received."""

    at: float
    stream: int
    type_url: str
    version_info: str
    response_nonce: str
    resource_names: tuple[str, ...]
    error_code: int | None
    error_message: str
    node_id: str

    @property
    def nack(self) -> bool:
        return self.error_code is not None


@dataclass(frozen=True)
class Sent:
    """One DiscoveryResponse as sent."""

    stream: int
    type_url: str
    version_info: str
    nonce: str
    resource_names: tuple[str, ...]


def short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot
        self._lock = threading.Condition()
        self._nonce = 0
        self._streams = 0
        self.requests: list[Recorded] = []
        self.sent: list[Sent] = []
        self._log: list[str] = []
        self._server: grpc.Server | None = None
        self.port = 0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "AdsServer":
        # A sync server holds a thread per open stream, and grpc opens one ADS stream per
        # channel target: keep enough threads for every channel a test client opens.
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def __enter__(self) -> "AdsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # ------------------------------------------------------------ the ADS service

    def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802 (gRPC name)
        answered: dict[str, frozenset[str]] = {}  # per type: the names last answered
        node_id = ""
        with self._lock:
            self._streams += 1
            stream = self._streams
        for request in request_iterator:
            node_id = request.node.id or node_id
            record = Recorded(
                at=time.monotonic(),
                stream=stream,
                type_url=request.type_url,
                version_info=request.version_info,
                response_nonce=request.response_nonce,
                resource_names=tuple(request.resource_names),
                error_code=request.error_detail.code if request.HasField("error_detail") else None,
                error_message=request.error_detail.message,
                node_id=node_id,
            )
            with self._lock:
                self.requests.append(record)
                self._log.append(
                    f"  [{stream}] got  {short(record.type_url)} version={record.version_info!r} "
                    f"nonce={record.response_nonce!r} names={list(record.resource_names)}"
                    + (f" ERROR {record.error_code}: {record.error_message}" if record.nack else "")
                )
                self._lock.notify_all()
            if record.nack:
                continue  # keep the last good config; resending the same would loop
            names = frozenset(record.resource_names)
            if answered.get(request.type_url) == names:
                continue  # an ACK of what this stream already has
            answered[request.type_url] = names
            yield self._response(stream, request.type_url, names)

    def _response(self, stream: int, type_url: str, names: frozenset[str]):
        bucket = self.snapshot.of(type_url)
        if type_url in ALL_RESOURCES:
            chosen = sorted(bucket)
        else:
            chosen = sorted(n for n in names if n in bucket)
        with self._lock:
            self._nonce += 1
            nonce = str(self._nonce)
            version = self.snapshot.type_versions.get(type_url, "")
            self.sent.append(Sent(stream, type_url, version, nonce, tuple(chosen)))
            self._log.append(
                f"  [{stream}] sent {short(type_url)} version={version} nonce={nonce} "
                f"resources={chosen}"
            )
        return discovery_pb2.DiscoveryResponse(
            version_info=version,
            type_url=type_url,
            nonce=nonce,
            resources=[xds.pack(bucket[n]) for n in chosen],
        )

    # ------------------------------------------------------------ what the client did

    def nacks(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.nack]

    def requested_names(self, type_url: str) -> set[str]:
        with self._lock:
            return {n for r in self.requests if r.type_url == type_url for n in r.resource_names}

    def node_ids(self) -> set[str]:
        with self._lock:
            return {r.node_id for r in self.requests}

    def acked(self, sent: Sent) -> bool:
        """Did the stream's client carry this response's version and nonce in a later
        request with no error_detail?"""
        with self._lock:
            return any(_acks(r, sent) for r in self.requests)

    def latest_sent(self) -> list[Sent]:
        """The last response of each type on each stream: what the client must ACK (it may
        answer only the newest of several responses that arrived while it was sending)."""
        with self._lock:
            return list({(s.stream, s.type_url): s for s in self.sent}.values())

    def wait_settled(
        self, expected: dict[str, set[str]], timeout: float, quiet: float = 0.3
    ) -> bool:
        """Wait until the client asked for every expected name of every expected type, has
        answered (ACK or NACK) the latest response of every type on every stream, and sent
        nothing for `quiet` seconds; after a NACK, until it has been quiet for a second.
        False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                now = time.monotonic()
                if self._settled(expected, now, quiet):
                    return True
                if now >= deadline:
                    return False
                self._lock.wait(timeout=min(quiet, deadline - now))

    def _settled(self, expected: dict[str, set[str]], now: float, quiet: float) -> bool:
        if not self.requests:
            return False
        idle = now - self.requests[-1].at
        if any(r.nack for r in self.requests) and idle >= max(quiet, 1.0):
            return True
        asked: dict[str, set[str]] = {}
        for r in self.requests:
            asked.setdefault(r.type_url, set()).update(r.resource_names)
        if not all(t in asked and names <= asked[t] for t, names in expected.items()):
            return False
        nonces = {(r.stream, r.response_nonce) for r in self.requests}
        latest = {(s.stream, s.type_url): s for s in self.sent}.values()
        return all((s.stream, s.nonce) in nonces for s in latest) and idle >= quiet

    def transcript(self) -> str:
        """Every request and response in order, for assertion messages."""
        with self._lock:
            return "\n".join(self._log)


def _acks(request: Recorded, sent: Sent) -> bool:
    return (
        request.stream == sent.stream
        and request.type_url == sent.type_url
        and request.response_nonce == sent.nonce
        and request.version_info == sent.version_info
        and not request.nack
    )
