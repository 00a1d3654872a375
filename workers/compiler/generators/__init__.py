"""Generators: one signature, `generate(plan, out) -> None`, composed in profile.py.

Each reads the proxy's `Plan` (what it needs, already resolved) and adds messages to the
`Builder`. Messages that do not depend on the proxy are built once per mesh through
`Builder.shared`, keyed by their inputs, so identical clusters and route configurations
are one object across every proxy compiled from the same `MeshContext`.
"""

from collections.abc import Callable

from workers.compiler import xds
from workers.compiler.plan import Plan
from workers.compiler.snapshot import resource_hash
from workers.compiler.tls import TlsRefs


class Builder:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.resources: dict[str, dict[str, object]] = {t: {} for t in xds.TYPE_ORDER}
        self.refs = TlsRefs(plan.proxy.consumer)
        self._entries: dict[int, list] = {}  # id → memo entry of the shared messages used

    def add(self, type_url: str, name: str, message) -> None:
        bucket = self.resources[type_url]
        if name in bucket and bucket[name] is not message and bucket[name] != message:
            raise ValueError(f"two different {type_url.rsplit('.', 1)[-1]} named {name!r}")
        bucket[name] = message

    def shared(self, key: tuple, build: Callable[[TlsRefs], object]):
        """The message for `key`, built once per mesh context; TLS references it makes are
        recorded on every proxy that uses it."""
        memo = self.plan.ctx._memo
        memo_key = ("msg", self.plan.proxy.consumer) + key
        found = memo.get(memo_key)
        if found is None:
            refs = TlsRefs(self.plan.proxy.consumer)
            found = [build(refs), refs, None]  # message, its TLS references, its hash
            memo[memo_key] = found
        self.refs.merge(found[1])
        self._entries[id(found[0])] = found
        return found[0]

    def hash_of(self, message) -> str:
        """A resource's content hash; a shared message is hashed once per mesh compile."""
        entry = self._entries.get(id(message))
        if entry is None or entry[0] is not message:
            return resource_hash(message)
        if entry[2] is None:
            entry[2] = resource_hash(message)
        return entry[2]


Generator = Callable[[Plan, Builder], None]
