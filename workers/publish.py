"""Fan-out of new configuration versions to every xDS replica.

`publish(messages)` sends the messages of one compile as JSON on one Redis pub/sub channel
(the setting MESHPLANE_CONFIG_CHANNEL), or to the in-process subscribers when there is no
REDIS_URL (the embedded mode). A message is

    {"tenant": "<account id>", "mesh": "shop", "meshUid": "…",
     "proxy": "mesh/shop/virtualNode/cart", "consumer": "envoy", "interception": "redirect",
     "version": "…" | null, "revision": 7}

(`version` null: the proxy no longer exists), plus "appPort", "ingressPort", "egressPort"
for an explicit-mode variant with declared ports (absent = 0, the defaults). A new version
also carries what a replica needs to serve it without reading the variant back:
"meshId", "seq" (the stored version's row id) and "types" (its type versions in
`workers.compiler.xds.TYPE_ORDER`); a replica reads the variant when they are absent.

On Redis the messages go out together, as one pub/sub message per chunk:

    {"batch": [<message>, <message>, …]}

a chunk holding at most MAX_BATCH_ENTRIES messages and, past its first message, at most
about MAX_BATCH_BYTES of JSON, so a compile changing 1,000 variants is one pub/sub message.
A subscriber (`Subscription`) accepts both a batch and a bare message (what publishers
before batching sent, e.g. during a rolling deploy), and hands out single messages
(`get`) or everything already waiting (`get_many`). Pub/sub is fire-and-forget: a replica
that was away re-reads stored versions when it resubscribes and polls slowly as a fallback,
so a failed publish is logged, never raised (the configuration is already stored).
"""

import json
import logging
import queue
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

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


def encode(messages: list[dict]) -> list[bytes]:
    """The pub/sub payloads carrying `messages`: {"batch": [...]} chunks, bounded in size."""
    payloads: list[bytes] = []
    parts: list[str] = []
    size = 0
    for message in messages:
        part = json.dumps(message, sort_keys=True, separators=(",", ":"))
        if parts and (len(parts) >= MAX_BATCH_ENTRIES or size + len(part) > MAX_BATCH_BYTES):
            payloads.append(_batch(parts))
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
    if parts:
        payloads.append(_batch(parts))
    return payloads


def _batch(parts: list[str]) -> bytes:
    return ('{"batch":[' + ",".join(parts) + "]}").encode()


def decode(payload: bytes | str) -> list[dict]:
    """The messages in one pub/sub payload: a batch, or a single message (older publishers)."""
    try:
        data = json.loads(payload)
    except ValueError:
        data = None
    if isinstance(data, dict):
        batch = data.get("batch")
        if batch is None:
            return [data]
        if isinstance(batch, list):
            return [message for message in batch if isinstance(message, dict)]
    log.warning("ignoring a configuration message that is neither a message nor a batch")
    return []


def publish(messages: list[dict]) -> None:
    if not messages:
        return
    if not settings.REDIS_URL:
        with _local_lock:
            subscribers = list(_local)
        for subscriber in subscribers:
            subscriber.put(list(messages))
        return
    try:
        payloads = encode(messages)
        client = redis_client(settings.REDIS_URL)
        if len(payloads) == 1:
            client.publish(settings.MESHPLANE_CONFIG_CHANNEL, payloads[0])
            return
        pipe = client.pipeline(transaction=False)
        for payload in payloads:
            pipe.publish(settings.MESHPLANE_CONFIG_CHANNEL, payload)
        pipe.execute()
    except Exception:  # noqa: BLE001 - stored already; replicas poll as a fallback
        log.warning("publishing %d config versions failed", len(messages), exc_info=True)


class Subscription:
    """Messages published after `subscribe()` returned, in order."""

    def __init__(self, pubsub=None) -> None:
        self._pubsub = pubsub
        self._queue: queue.Queue = queue.Queue()  # embedded mode: lists of messages
        self._pending: deque[dict] = deque()  # taken from a batch, not handed out yet

    def get(self, timeout: float) -> dict | None:
        """The next message, or None if none came within `timeout` seconds."""
        if not self._pending:
            self._pending.extend(self._receive(timeout))
        return self._pending.popleft() if self._pending else None

    def get_many(self, timeout: float, limit: int = 10_000) -> list[dict]:
        """Every message already waiting (whole payloads, until `limit` is reached), or an
        empty list if none came within `timeout` seconds."""
        out = list(self._pending)
        self._pending.clear()
        if not out:
            out = self._receive(timeout)
        while out and len(out) < limit and (more := self._receive(0)):
            out.extend(more)
        return out

    def _receive(self, timeout: float) -> list[dict]:
        """The messages of the next published payload (possibly none within `timeout`)."""
        if self._pubsub is None:
            try:
                return self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
            except queue.Empty:
                return []
        while True:
            message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
            if message is None:
                return []
            messages = decode(message["data"])
            if messages:
                return messages
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
