"""What one stream serves: the variant's current entry plus clusters being retired.

Make-before-break: when a new version drops clusters, the stream keeps serving them (and
their endpoints) until the client has ACKed the listeners and route configurations of the
new version, so no route points at a cluster the proxy already removed (zero 503s during
a change). Only then are they removed (a CDS response without them in state of the world,
`removed_resources` in delta). A NACKed route update keeps them: the proxy still routes
by the old routes.
"""

from __future__ import annotations

import hashlib

from workers.compiler import xds
from workers.xds.cache import TYPES, Entry, Resource

RETIRABLE = (xds.CLUSTER, xds.ENDPOINT)
# The types whose ACK releases retiring clusters: what refers to clusters.
REFERRERS = (xds.LISTENER, xds.ROUTE)


class Served:
    __slots__ = ("entry", "has_retiring", "retiring")

    def __init__(self) -> None:
        self.entry: Entry | None = None
        self.retiring: dict[str, dict[str, Resource]] = {t: {} for t in RETIRABLE}
        self.has_retiring = False  # any(self.retiring.values()), kept as it changes

    def update(self, entry: Entry) -> None:
        old = self.entry
        if old is not None and entry.version is not None:
            for type_url in RETIRABLE:
                new_names = entry.of(type_url)
                if new_names is old.of(type_url):
                    continue  # the same type version (a shared bucket): nothing dropped
                keep = self.retiring[type_url]
                for name, resource in old.of(type_url).items():
                    if name not in new_names:
                        keep[name] = resource
                for name in new_names:
                    keep.pop(name, None)
                self.has_retiring = any(self.retiring.values())
        else:  # first entry, or the proxy is gone: nothing to keep
            self.retire()
        self.entry = entry

    def retire(self) -> None:
        self.retiring = {t: {} for t in RETIRABLE}
        self.has_retiring = False

    def resources(self, type_url: str) -> dict[str, Resource]:
        current = self.entry.of(type_url) if self.entry is not None else {}
        retiring = self.retiring.get(type_url)
        return {**retiring, **current} if retiring else current

    def version(self, type_url: str) -> str:
        if self.entry is None or self.entry.version is None:
            return ""
        base = self.entry.type_versions.get(type_url, "")
        retiring = self.retiring.get(type_url)
        if not retiring:
            return base
        tail = hashlib.sha256("\n".join(sorted(retiring)).encode()).hexdigest()[:8]
        return f"{base}+{tail}"


class ServingStream:
    """What SotW and delta streams share: the served entry, per-type state, make-before-break.

    A subclass sends a type with `_maybe_send(type_url)` and says in `_awaiting(state)`
    whether a type's last response is still unanswered (a pending ACK holds retirement).
    """

    __slots__ = ("_nonce", "reporter", "served", "types")

    def __init__(self, reporter) -> None:
        self.reporter = reporter
        self.served = Served()
        self.types: dict = {}
        self._nonce = 0

    def on_entry(self, entry: Entry) -> list[bytes]:
        self.served.update(entry)
        out: list[bytes] = []
        for type_url in TYPES:
            out += self._maybe_send(type_url)
        return out + self._maybe_retire()

    def _maybe_send(self, type_url: str) -> list[bytes]:
        raise NotImplementedError

    def _awaiting(self, state) -> bool:
        raise NotImplementedError

    def _maybe_retire(self) -> list[bytes]:
        """Drop retiring clusters once nothing the client uses can still refer to them."""
        if not self.served.has_retiring:
            return []
        for type_url in REFERRERS:
            state = self.types.get(type_url)
            if state is not None and (self._awaiting(state) or state.rejected):
                return []
        self.served.retire()
        return self._maybe_send(xds.CLUSTER) + self._maybe_send(xds.ENDPOINT)
