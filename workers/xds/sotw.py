"""State-of-the-world ADS (`StreamAggregatedResources`): one stream's protocol state.

Pure protocol, no I/O: `on_request` and `on_entry` return the encoded responses to send,
and ACKs/NACKs go to a `Reporter`. Per type:

- a request carrying a nonce other than the type's latest one is stale and ignored;
- a NACK (error_detail) is reported with the version it rejects, and that version is not
  sent again (unless the subscription changes); the client keeps its last good config;
- subscriptions: an empty list is a wildcard for listeners and clusters and an
  unsubscribe for the others; a name the proxy does not have is left out;
- a reconnecting client that already holds the current version (its first request
  carries it) is not sent it again;
- a new version goes out in the order clusters, endpoints, listeners, routes, secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from envoy.service.discovery.v3 import discovery_pb2

from workers.compiler import xds
from workers.xds.cache import TYPES, Bucket, PushMemo, Resource, text_field
from workers.xds.served import ServingStream

WILDCARD_TYPES = (xds.LISTENER, xds.CLUSTER)


def _body(type_url: str, version: str, chosen: list[Resource]) -> bytes:
    """A DiscoveryResponse but its nonce: version_info, resources, type_url."""
    return b"".join([text_field(1, version), *(r.sotw for r in chosen), text_field(4, type_url)])


# (type URL, version, id(bucket)) → a wildcard response without its nonce, built once per
# push for every stream serving that bucket.
_WHOLE = PushMemo()


def _whole(type_url: str, version: str, bucket: Bucket) -> bytes:
    ident = (type_url, version, id(bucket))
    body = _WHOLE.get(ident, (bucket,))
    if body is None:
        body = _WHOLE.put(
            ident, (bucket,), _body(type_url, version, [r for _, r in bucket.sorted_items()])
        )
    return body


class Reporter(Protocol):
    def acked(self, type_url: str, version: str) -> None: ...

    def nacked(self, type_url: str, version: str, message: str) -> None: ...


@dataclass(slots=True)
class TypeState:
    names: frozenset[str] | None = None  # None: wildcard
    nonce: str = ""
    responded: bool = False
    sent_version: str = ""
    sent_names: frozenset[str] | None = None
    client_version: str = ""  # what the client said it had when it (re)subscribed
    in_flight: bool = False
    rejected: bool = False
    nacked: set[str] = field(default_factory=set)


def subscription(type_url: str, names) -> frozenset[str] | None:
    names = list(names)
    if "*" in names or (not names and type_url in WILDCARD_TYPES):
        return None
    return frozenset(names)


class SotwStream(ServingStream):
    __slots__ = ()

    types: dict[str, TypeState]

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> list[bytes]:
        type_url = request.type_url
        if type_url not in TYPES:
            return []
        state = self.types.get(type_url)
        if state is None:
            state = self.types[type_url] = TypeState(client_version=request.version_info)
        elif request.response_nonce and request.response_nonce != state.nonce:
            return []  # stale: answers a response that has been superseded
        if request.response_nonce and request.response_nonce == state.nonce and state.in_flight:
            state.in_flight = False
            if request.HasField("error_detail"):
                state.rejected = True
                state.nacked.add(state.sent_version)
                self.reporter.nacked(type_url, state.sent_version, request.error_detail.message)
            else:
                state.rejected = False
                self.reporter.acked(type_url, request.version_info)
        state.names = subscription(type_url, request.resource_names)
        return self._maybe_send(type_url) + self._maybe_retire()

    # ------------------------------------------------------------------ sending

    def _maybe_send(self, type_url: str) -> list[bytes]:
        state = self.types.get(type_url)
        entry = self.served.entry
        if state is None or entry is None:
            return []
        version = self.served.version(type_url)
        if state.responded:
            if state.sent_names == state.names and (
                version == state.sent_version or version in state.nacked
            ):
                return []
        elif state.client_version and state.client_version == version:
            # Reconnected holding exactly this version: nothing to re-send.
            state.responded, state.sent_version, state.sent_names = True, version, state.names
            self.reporter.acked(type_url, version)
            return []
        if state.names is not None and not state.names:
            state.sent_names = state.names  # unsubscribed from every name: nothing to send
            return []
        resources = self.served.resources(type_url)
        self._nonce += 1
        state.nonce = str(self._nonce)
        state.responded, state.in_flight = True, True
        state.sent_version, state.sent_names = version, state.names
        if state.names is None and type(resources) is Bucket:
            # A wildcard over a shared bucket: every such stream sends the same bytes.
            return [_whole(type_url, version, resources) + text_field(5, state.nonce)]
        if state.names is None:
            chosen = [resources[n] for n in sorted(resources)]
        else:
            chosen = [resources[n] for n in sorted(state.names) if n in resources]
        return [_body(type_url, version, chosen) + text_field(5, state.nonce)]

    def _awaiting(self, state: TypeState) -> bool:
        return state.in_flight
