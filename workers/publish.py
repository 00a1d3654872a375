"""Fan-out of new configuration versions to every xDS replica.

`publish(groups)` sends what one compile stored (grouped by meshapi.services.proxies.store)
as JSON on one Redis pub/sub channel (the setting MESHPLANE_CONFIG_CHANNEL), or to the
in-process subscribers when there is no REDIS_URL (the embedded mode). It tells of one
variant per message; a message is

    {"tenant": "<account id>", "mesh": "shop", "meshUid": "…",
     "proxy": "mesh/shop/virtualNode/cart", "consumer": "envoy", "interception": "redirect",
     "version": "…" | null, "revision": 7}

(`version` null: the proxy no longer exists), plus "appPort", "ingressPort", "egressPort"
for an explicit-mode variant with declared ports (absent = 0, the defaults). A new version
also carries what a replica needs to serve it without reading the variant back:
"meshId", "seq" (the stored version's row id) and "types" (its type versions in
`workers.compiler.xds.TYPE_ORDER`); a replica reads the variant when they are absent.

On Redis the messages of one compile go out together, grouped: what the messages of a
compile share (tenant, mesh, version, revision, type versions: the 1,000 proxies one
change reaches with identical configurations) is sent once per group, and each proxy is a
row of the fields that tell it apart (ROW_FIELDS, trailing nulls left out):

    {"groups": [{"common": {"tenant": …, "version": …, "types": […], …},
                 "rows": [["mesh/shop/virtualNode/cart", "envoy", "redirect", 41], …]}, …]}

A payload holds at most MAX_BATCH_ENTRIES rows and, past its first row, about
MAX_BATCH_BYTES of JSON, so a compile changing 1,000 variants is one pub/sub message of
about 70 KB (448 KB as one object per message). A subscriber (`Subscription`) also accepts
what earlier publishers sent during a rolling deploy, {"batch": [<message>, …]} and a bare
message, and hands out groups (`get_groups`, what a replica's refresher reads), single
messages (`get`) or every message already waiting (`get_many`). Pub/sub is
fire-and-forget: a replica that was away re-reads stored versions when it resubscribes
and polls slowly as a fallback, so a failed publish is logged, never raised (the
configuration is already stored).
"""

import json
import logging
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import NamedTuple

from django.conf import settings

log = logging.getLogger(__name__)

MAX_BATCH_ENTRIES = 1000  # messages in one published batch
MAX_BATCH_BYTES = 512 * 1024  # JSON bytes in one published batch, past its first message

_local: list[queue.Queue] = []
_local_lock = threading.Lock()


@lru_cache(maxsize=4)
def redis_client(url: str):
    """One client (and connection pool) per URL per process, with short timeouts."""
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)


# The fields that tell one proxy's message from another's in a compile, in row order.
ROW_FIELDS = ("proxy", "consumer", "interception", "seq", "appPort", "ingressPort", "egressPort")
_ROW_SET = frozenset(ROW_FIELDS)


class Group(NamedTuple):
    """Messages sharing every field but ROW_FIELDS: `common` once, a row per message (a
    tuple of len(ROW_FIELDS), None where the message had no such field)."""

    common: dict
    rows: list[tuple]


def group(messages: Iterable[dict]) -> list[Group]:
    """Messages grouped by what they share, in the order each group first appears."""
    groups: list[Group] = []
    # A compile's messages come in runs of one content: compare with the last group first.
    by_version: dict[object, list[Group]] = {}
    last: Group | None = None
    for message in messages:
        common = {k: v for k, v in message.items() if k not in _ROW_SET}
        row = tuple(map(message.get, ROW_FIELDS))
        if last is not None and last.common == common:
            last.rows.append(row)
            continue
        ident = (common.get("version"), common.get("tenant"), common.get("mesh"))
        same = by_version.setdefault(ident, [])
        for candidate in same:
            if candidate.common == common:
                last = candidate
                break
        else:
            last = Group(common, [])
            same.append(last)
            groups.append(last)
        last.rows.append(row)
    return groups


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def encode(messages: list[dict]) -> list[bytes]:
    """The pub/sub payloads carrying `messages`: {"groups": [...]} chunks, bounded in size
    (the pipeline publishes groups it built; this is for messages one at a time)."""
    return encode_groups(group(messages))


def encode_groups(groups: Iterable[Group]) -> list[bytes]:
    """The pub/sub payloads carrying `groups`, in chunks bounded in rows and bytes."""
    payloads: list[bytes] = []
    parts: list[str] = []  # the groups (or parts of groups) of the payload being built
    count = size = 0
    for common, rows in groups:
        head = '{"common":' + _dumps(common) + ',"rows":'
        start = 0
        while start < len(rows):
            take = min(len(rows) - start, MAX_BATCH_ENTRIES - count)
            text = _rows_json(rows[start : start + take])
            # Past a payload's first row, bounded in bytes too: fewer rows, or a new payload.
            while count + take > 1 and size + len(head) + len(text) > MAX_BATCH_BYTES:
                if take > 1:
                    take //= 2
                    text = _rows_json(rows[start : start + take])
                else:
                    payloads.append(_payload(parts))
                    parts, count, size = [], 0, 0
            parts.append(head + text + "}")
            count += take
            size += len(head) + len(text) + 2
            start += take
            if count >= MAX_BATCH_ENTRIES:
                payloads.append(_payload(parts))
                parts, count, size = [], 0, 0
    if parts:
        payloads.append(_payload(parts))
    return payloads


_NO_PORTS = (None, None, None)


def _rows_json(rows: list[tuple]) -> str:
    # The ports are absent (None) for all but explicit-mode variants: left out.
    return json.dumps(
        [row[:4] if row[4:] == _NO_PORTS else row for row in rows], separators=(",", ":")
    )


def _payload(parts: list[str]) -> bytes:
    return ('{"groups":[' + ",".join(parts) + "]}").encode()


def decode_groups(payload: bytes | str) -> list[Group]:
    """The groups in one pub/sub payload; a batch or a single message (earlier publishers)
    as groups of one row. Malformed parts are left out, with a warning."""
    try:
        data = json.loads(payload)
    except ValueError:
        data = None
    if isinstance(data, dict):
        groups = data.get("groups")
        if isinstance(groups, list):
            out = []
            width = len(ROW_FIELDS)
            for item in groups:
                common = item.get("common") if isinstance(item, dict) else None
                rows = item.get("rows") if isinstance(item, dict) else None
                if not isinstance(common, dict) or not isinstance(rows, list):
                    log.warning("ignoring a malformed group of configuration messages")
                    continue
                out.append(
                    Group(
                        common,
                        [
                            tuple(row) + (None,) * (width - len(row))
                            for row in rows
                            if isinstance(row, list) and len(row) <= width
                        ],
                    )
                )
            return out
        batch = data.get("batch", [data])
        if isinstance(batch, list):
            return group(message for message in batch if isinstance(message, dict))
    log.warning("ignoring a configuration message that is neither a message nor a batch")
    return []


def messages_of(groups: Iterable[Group]) -> list[dict]:
    """The messages a list of groups carries, as published (fields a row lacks left out)."""
    out = []
    for common, rows in groups:
        for row in rows:
            message = dict(common)
            message.update((k, v) for k, v in zip(ROW_FIELDS, row, strict=True) if v is not None)
            out.append(message)
    return out


def decode(payload: bytes | str) -> list[dict]:
    """The messages in one pub/sub payload, whatever the format."""
    return messages_of(decode_groups(payload))


def publish(groups: list[Group]) -> None:
    """Send a compile's groups (meshapi.services.proxies.store builds them) to every
    replica; never raises."""
    if not groups:
        return
    if not settings.REDIS_URL:
        with _local_lock:
            subscribers = list(_local)
        for subscriber in subscribers:
            subscriber.put(list(groups))
        return
    try:
        payloads = encode_groups(groups)
        client = redis_client(settings.REDIS_URL)
        if len(payloads) == 1:
            client.publish(settings.MESHPLANE_CONFIG_CHANNEL, payloads[0])
            return
        pipe = client.pipeline(transaction=False)
        for payload in payloads:
            pipe.publish(settings.MESHPLANE_CONFIG_CHANNEL, payload)
        pipe.execute()
    except Exception:  # noqa: BLE001 - stored already; replicas poll as a fallback
        count = sum(len(g.rows) for g in groups)
        log.warning("publishing %d config versions failed", count, exc_info=True)


class Subscription:
    """Messages published after `subscribe()` returned, in order."""

    def __init__(self, pubsub=None) -> None:
        self._pubsub = pubsub
        self._queue: queue.Queue = queue.Queue()  # embedded mode: lists of groups
        self._pending: deque[dict] = deque()  # taken from a payload, not handed out yet

    def get(self, timeout: float) -> dict | None:
        """The next message, or None if none came within `timeout` seconds (one message
        at a time, as tests read them; a replica reads groups)."""
        if not self._pending:
            self._pending.extend(messages_of(self._receive(timeout)))
        return self._pending.popleft() if self._pending else None

    def get_many(self, timeout: float, limit: int = 10_000) -> list[dict]:
        """Every message already waiting (whole payloads, until `limit` is reached), or an
        empty list if none came within `timeout` seconds."""
        out = list(self._pending)
        self._pending.clear()
        out.extend(messages_of(self.get_groups(0 if out else timeout, limit - len(out))))
        return out

    def get_groups(self, timeout: float, limit: int = 10_000) -> list[Group]:
        """The groups of every payload already waiting (until they hold `limit` rows), or
        an empty list if none came within `timeout` seconds."""
        out = self._receive(timeout)
        rows = sum(len(g.rows) for g in out)
        while out and rows < limit and (more := self._receive(0)):
            out.extend(more)
            rows += sum(len(g.rows) for g in more)
        return out

    def _receive(self, timeout: float) -> list[Group]:
        """The groups of the next published payload (possibly none within `timeout`)."""
        if self._pubsub is None:
            try:
                return self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
            except queue.Empty:
                return []
        while True:
            message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
            if message is None:
                return []
            groups = decode_groups(message["data"])
            if groups:
                return groups
            timeout = 0  # an empty or unreadable payload: look at what follows, don't wait


@contextmanager
def subscribe() -> Iterator[Subscription]:
    """Listen for new configuration versions (Redis, or in-process in embedded mode)."""
    if not settings.REDIS_URL:
        subscription = Subscription()
        with _local_lock:
            _local.append(subscription._queue)
        try:
            yield subscription
        finally:
            with _local_lock:
                _local.remove(subscription._queue)
        return
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    pubsub.subscribe(settings.MESHPLANE_CONFIG_CHANNEL)
    # Wait for the subscription to be confirmed so nothing published from here on is missed.
    pubsub.get_message(timeout=5)
    try:
        yield Subscription(pubsub)
    finally:
        pubsub.close()
        client.close()
