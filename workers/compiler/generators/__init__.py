"""Generators: one signature, `generate(plan, out) -> None`, composed in profile.py.

Each reads the proxy's `Plan` (what it needs, already resolved) and adds messages to the
`Builder`. Messages that do not depend on the proxy are built once per mesh through
`Builder.shared`, keyed by their inputs, so identical clusters and route configurations
are one object across every proxy compiled from the same `MeshContext`.
"""

from collections.abc import Callable

from workers.compiler import xds
from workers.compiler.plan import Plan
from workers.compiler.tls import TlsRefs


class Builder:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.resources: dict[str, dict[str, object]] = {t: {} for t in xds.TYPE_ORDER}
        self.refs = TlsRefs(plan.proxy.consumer)

    def add(self, type_url: str, name: str, message) -> None:
        bucket = self.resources[type_url]
        if name in bucket and bucket[name] is not message and bucket[name] != message:
            raise ValueError(f"two different {type_url.rsplit('.', 1)[-1]} named {name!r}")
        bucket[name] = message

    def shared(self, key: tuple, build: Callable[[TlsRefs], object]):
        """The message for `key`, built once per mesh context; TLS references it makes are
        recorded on every proxy that uses it."""
        memo = self.plan.ctx._memo
        found = memo.get(("msg", self.plan.proxy.consumer) + key)
        if found is None:
            refs = TlsRefs(self.plan.proxy.consumer)
            found = (build(refs), refs)
            memo[("msg", self.plan.proxy.consumer) + key] = found
        self.refs.merge(found[1])
        return found[0]


Generator = Callable[[Plan, Builder], None]
