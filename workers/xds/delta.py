"""Incremental ADS (`DeltaAggregatedResources`): one stream's protocol state.

Like sotw.py, pure protocol. The server tracks what the client holds ({name: version},
the version being the resource's content digest, seeded from `initial_resource_versions`
when a client reconnects), and sends only resources whose digest differs, so a client
resuming after a control-plane restart is sent nothing it already has. Per type:

- subscriptions change with every request (`*` or a first request without names is a
  wildcard for listeners and clusters); unsubscribed names are forgotten, not removed;
- a subscribed name the proxy does not have is listed in `removed_resources` once;
- ACK/NACK match the nonce of a response; an unknown nonce is stale and ignored; a NACK is
  reported with the response's system version and the resources it carried are not sent
  again in that same version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from envoy.service.discovery.v3 import discovery_pb2

from workers.xds.cache import TYPES, Bucket, Entry, PushMemo, sorted_items, text_field
from workers.xds.served import ServingStream
from workers.xds.sotw import WILDCARD_TYPES

# DeltaDiscoveryResponse.type_url (field 4), encoded once per type.
TYPE_URL_FIELD = {type_url: text_field(4, type_url) for type_url in TYPES}


@lru_cache(maxsize=256)
def version_field(version: str) -> bytes:
    """DeltaDiscoveryResponse.system_version_info (field 1): one encoding per version,
    shared by the 1,000 streams a push reaches."""
    return text_field(1, version)


class _Step(NamedTuple):
    """What a client holding exactly bucket `old` is sent to hold `new` at `version`:
    the response without its nonce (head + nonce field + tail) and the changes."""

    old: Bucket
    new: Bucket
    head: bytes  # system_version_info, the resources sent, type_url
    tail: bytes  # removed_resources
    put: list[tuple[str, str]]  # (name, digest) sent
    drop: list[str]  # names removed
    sent: dict[str, str]  # {name: digest} sent, as last_sent keeps it (read only)


# (type URL, version, id(old), id(new)) → _Step: one per push for all its streams.
_STEPS = PushMemo()


def _step(type_url: str, version: str, old: Bucket, new: Bucket) -> _Step:
    ident = (type_url, version, id(old), id(new))
    step = _STEPS.get(ident, (old, new))
    if step is not None:
        return step
    updates = [
        r
        for name, r in new.sorted_items()
        if (had := old.get(name)) is None or had.digest != r.digest
    ]
    drop = sorted(n for n in old if n not in new)
    step = _Step(
        old,
        new,
        version_field(version) + b"".join(r.delta for r in updates) + TYPE_URL_FIELD[type_url],
        b"".join(text_field(6, n) for n in drop),
        [(r.name, r.digest) for r in updates],
        drop,
        {r.name: r.digest for r in updates},
    )
    return _STEPS.put(ident, (old, new), step)


@dataclass(slots=True)
class DeltaTypeState:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    client_has: dict[str, str] = field(default_factory=dict)
    told_absent: set[str] = field(default_factory=set)
    pending: dict[str, str] = field(default_factory=dict)  # nonce → system version
    responded: bool = False
    resumed: bool = False
    rejected: bool = False
    nacked: set[tuple[str, str]] = field(default_factory=set)  # (name, digest)
    last_sent: dict[str, dict[str, str]] = field(default_factory=dict)  # nonce → {name: digest}
    # The served version last compared with what the client has, while nothing on the
    # client's side (subscriptions, NACKs) has changed since: the same version again has
    # nothing new to send. A push reaching 1,000 streams compares only the types it changed.
    checked: str | None = None
    # The bucket whose resources `client_has` holds exactly (a wildcard subscription with
    # no names and no NACKs, last sent a bucket): the next bucket's response is then the
    # same for every such stream but for its nonce (see _step).
    synced: Bucket | None = None


class DeltaStream(ServingStream):
    __slots__ = ()

    types: dict[str, DeltaTypeState]

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> list[bytes]:
        type_url = request.type_url
        if type_url not in TYPES:
            return []
        state = self.types.get(type_url)
        subscribe = request.resource_names_subscribe
        unsubscribe = request.resource_names_unsubscribe
        if state is None:
            state = self.types[type_url] = DeltaTypeState()
            state.client_has = dict(request.initial_resource_versions)
            state.resumed = bool(state.client_has)
            if type_url in WILDCARD_TYPES and not subscribe:
                state.wildcard = True
        elif subscribe or unsubscribe:
            state.checked = None
            state.synced = None
        for name in subscribe if subscribe else ():
            if name == "*":
                state.wildcard = True
            else:
                state.names.add(name)
                state.told_absent.discard(name)
        for name in unsubscribe if unsubscribe else ():
            if name == "*":
                state.wildcard = False
            else:
                state.names.discard(name)
                state.told_absent.discard(name)
                if not state.wildcard:
                    state.client_has.pop(name, None)
        nonce = request.response_nonce
        if nonce and nonce in state.pending:
            version = state.pending.pop(nonce)
            sent = state.last_sent.pop(nonce, {})
            if state.pending:
                # Older responses the client answered only through this one are settled too.
                for older in [n for n in state.pending if int(n) < int(nonce)]:
                    state.pending.pop(older)
                    state.last_sent.pop(older, None)
            if request.HasField("error_detail"):
                state.rejected = True
                state.checked = None
                state.nacked.update(sent.items())
                self.reporter.nacked(type_url, version, request.error_detail.message)
            else:
                state.rejected = False
                self.reporter.acked(type_url, version)
        served = self.served
        if served.has_retiring:
            return self._maybe_send(type_url) + self._maybe_retire()
        entry = served.entry
        if (
            entry is not None
            and entry.version is not None
            and state.checked == entry.type_versions.get(type_url, "")
        ):
            return []  # compared at this version already (an ACK of a push: most requests)
        return self._maybe_send(type_url)

    def on_entry(self, entry: Entry) -> list[bytes]:
        served = self.served
        served.update(entry)
        if served.has_retiring or entry.version is None:
            return super().on_entry(entry)
        # Without retiring clusters a type's served version is its type version: a type
        # already compared at that version has nothing new (most of a push's types).
        versions = entry.type_versions
        types = self.types
        out: list[bytes] = []
        for type_url in TYPES:
            state = types.get(type_url)
            if state is not None and state.checked != versions.get(type_url, ""):
                out += self._maybe_send(type_url)
        return out

    def _maybe_send(self, type_url: str) -> list[bytes]:
        state = self.types.get(type_url)
        entry = self.served.entry
        if state is None or entry is None:
            return []
        version = self.served.version(type_url)
        if version == state.checked:
            return []
        state.checked = version
        resources = self.served.resources(type_url)
        client_has = state.client_has
        nacked = state.nacked
        names = state.names
        plain = state.wildcard and not names and not nacked and type(resources) is Bucket
        synced = state.synced
        if plain and synced is not None and state.responded:
            step = _step(type_url, version, synced, resources)
            return self._send_step(type_url, version, state, step)
        if state.wildcard:
            wanted = resources
            removed = sorted(n for n in client_has if n not in resources)
        else:
            wanted = {n: resources[n] for n in names if n in resources}
            removed = sorted(n for n in client_has if n not in wanted and n in names)
        updates = [
            r
            for name, r in sorted_items(wanted)
            if client_has.get(name) != r.digest and (not nacked or (name, r.digest) not in nacked)
        ]
        told = state.told_absent
        absent = (
            sorted(n for n in names if n not in resources and n not in client_has and n not in told)
            if names
            else []
        )
        # What the client will hold is exactly `resources` (everything subscribed, nothing
        # rejected): the next change can take the shared step.
        state.synced = resources if plain else None
        # A fresh client waits for a first answer even when it is empty; a resuming one
        # (it sent initial_resource_versions) already has what it needs.
        first = not state.responded and entry.version is not None and not state.resumed
        if not updates and not removed and not absent and not first:
            return []
        for r in updates:
            client_has[r.name] = r.digest
        for name in removed:
            del client_has[name]
        if absent:
            told.update(absent)
        self._nonce += 1
        nonce = str(self._nonce)
        state.pending[nonce] = version
        state.last_sent[nonce] = {r.name: r.digest for r in updates}
        state.responded = True
        return [
            b"".join(
                [
                    version_field(version),
                    *(r.delta for r in updates),
                    TYPE_URL_FIELD[type_url],
                    text_field(5, nonce),
                    *(text_field(6, n) for n in removed + absent),
                ]
            )
        ]

    def _send_step(
        self, type_url: str, version: str, state: DeltaTypeState, step: _Step
    ) -> list[bytes]:
        """Send a client holding exactly `step.old` the response that makes it hold
        `step.new`: the shared bytes with this stream's nonce."""
        state.synced = step.new
        if not step.put and not step.drop:
            return []
        client_has = state.client_has
        for name, digest in step.put:
            client_has[name] = digest
        for name in step.drop:
            del client_has[name]
        self._nonce += 1
        nonce = str(self._nonce)
        state.pending[nonce] = version
        state.last_sent[nonce] = step.sent
        return [step.head + text_field(5, nonce) + step.tail]

    def _awaiting(self, state: DeltaTypeState) -> bool:
        return state.pending
