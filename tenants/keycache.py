"""A short-lived, per-process cache of resolved access keys.

Resolving a key is the most expensive step of a read (a join of key, tenant, membership
and user). The cache keeps a resolved key for at most MESHPLANE_KEY_CACHE_SECONDS and is
dropped whenever any key or membership changes: such writes bump an epoch in Redis (or
in-process without REDIS_URL), and every lookup compares the epoch first, a single
Redis GET. If Redis cannot be read the cache is bypassed, so a revocation is never
missed because Redis is away; if the bump itself fails, entries still expire by age.
"""

import logging
import threading
import time
from functools import lru_cache

from django.conf import settings
from django.db import transaction

EPOCH_KEY = "meshplane:access-keys:epoch"
log = logging.getLogger(__name__)

_lock = threading.Lock()
_entries: dict[str, tuple[float, object]] = {}
_seen_epoch: bytes | None = None
_local_epoch = 0
MAX_ENTRIES = 10_000


@lru_cache(maxsize=4)
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)


def _current_epoch() -> bytes | None:
    """The epoch, or None when it cannot be known (then nothing is served from cache)."""
    if not settings.REDIS_URL:
        return str(_local_epoch).encode()
    try:
        return _redis(settings.REDIS_URL).get(EPOCH_KEY) or b"0"
    except Exception:  # noqa: BLE001 - Redis away: fall back to the database
        log.debug("key cache epoch unreadable; bypassing cache", exc_info=True)
        return None


def get(key_id: str):
    """A cached key, or None if it must be loaded from the database."""
    global _seen_epoch
    ttl = settings.MESHPLANE_KEY_CACHE_SECONDS
    if ttl <= 0:
        return None
    epoch = _current_epoch()
    with _lock:
        if epoch is None or epoch != _seen_epoch:
            _entries.clear()
            _seen_epoch = epoch
            return None
        entry = _entries.get(key_id)
    if entry is None or entry[0] < time.monotonic():
        return None
    return entry[1]


def put(key_id: str, key: object) -> None:
    if settings.MESHPLANE_KEY_CACHE_SECONDS <= 0:
        return
    with _lock:
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[key_id] = (time.monotonic() + settings.MESHPLANE_KEY_CACHE_SECONDS, key)


def _bump() -> None:
    global _local_epoch
    with _lock:
        _entries.clear()
        _local_epoch += 1
    if settings.REDIS_URL:
        try:
            _redis(settings.REDIS_URL).incr(EPOCH_KEY)
        except Exception:  # noqa: BLE001 - entries elsewhere still expire by age
            log.warning("could not publish an access-key change; caches expire by age")


def invalidate() -> None:
    """Drop every cached key, here and in other processes, once the transaction commits."""
    transaction.on_commit(_bump)
