"""Fan-out of new configuration versions to every xDS replica.

`publish(messages)` sends each message as JSON on one Redis pub/sub channel (the setting
MESHPLANE_CONFIG_CHANNEL), or to the in-process subscribers when there is no REDIS_URL (the
embedded mode). A message is

    {"tenant": "<account id>", "mesh": "shop", "meshUid": "…",
     "proxy": "mesh/shop/virtualNode/cart", "consumer": "envoy", "interception": "redirect",
     "version": "…" | null, "revision": 7}

(`version` null: the proxy no longer exists), plus "appPort", "ingressPort", "egressPort"
for an explicit-mode variant with declared ports (absent = 0, the defaults). Pub/sub is
fire-and-forget: a replica that was away re-reads stored versions when it resubscribes and
polls slowly as a fallback, so a failed publish is logged, never raised (the configuration
is already stored).
"""

import json
import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from django.conf import settings

log = logging.getLogger(__name__)

_local: list[queue.Queue] = []
_local_lock = threading.Lock()


@lru_cache(maxsize=4)
def _client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)


def publish(messages: list[dict]) -> None:
    if not messages:
        return
    if not settings.REDIS_URL:
        with _local_lock:
            subscribers = list(_local)
        for subscriber in subscribers:
            for message in messages:
                subscriber.put(message)
        return
    try:
        pipe = _client(settings.REDIS_URL).pipeline(transaction=False)
        for message in messages:
            pipe.publish(settings.MESHPLANE_CONFIG_CHANNEL, json.dumps(message, sort_keys=True))
        pipe.execute()
    except Exception:  # noqa: BLE001 - stored already; replicas poll as a fallback
        log.warning("publishing %d config versions failed", len(messages), exc_info=True)


class Subscription:
    """Messages published after `subscribe()` returned, in order."""

    def __init__(self, pubsub=None) -> None:
        self._pubsub = pubsub
        self._queue: queue.Queue = queue.Queue()

    def get(self, timeout: float) -> dict | None:
        """The next message, or None if none came within `timeout` seconds."""
        if self._pubsub is None:
            try:
                return self._queue.get(timeout=timeout)
            except queue.Empty:
                return None
        message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        return json.loads(message["data"]) if message else None


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
