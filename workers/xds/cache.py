"""The replica's in-memory configuration cache: stored snapshots, serialized once.

A proxy variant is keyed by (tenant account id, node id, consumer, interception, and the
ports an explicit-mode proxy declared), as the compile pipeline publishes it. The cache
holds the variants some stream on this replica watches: their current version and, per
type, {name: Resource}. A `Resource` carries the bytes a response needs, encoded once when
first read from the database and shared by every variant and stream using the same stored
message (a cluster used by 500 proxies is held and encoded once per replica), so a push
only concatenates prepared bytes.

Freshness (`CacheRefresher`): a thread subscribed to the Redis channel reloads a watched
variant when a new version of it is published; on start and after every reconnect it
re-reads every watched variant (anything published while it was away), and it polls the
stored versions slowly as a fallback, so no version is missed for long even if a publish
was lost. The loading runs in threads (Django's ORM is synchronous); entries are swapped
in on the event loop, which then notifies the streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import operator
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

from workers import publish
from workers.compiler import xds

log = logging.getLogger(__name__)

TYPES = xds.TYPE_ORDER  # CDS, EDS, LDS, RDS, SDS: the order a push goes in
POLL_SECONDS = 30.0  # fallback poll of stored versions
RECONNECT_SECONDS = 1.0
MAX_BATCH = 10_000  # published messages taken together (whole payloads)
LOAD_SLICE = 250  # variants read from the database at a time
SWAP_SLICE = 100  # entries swapped in before the streams they woke may write


# ------------------------------------------------------------------ wire encoding


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]  # tags and most lengths: no loop, no allocation
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (strings, bytes, messages)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def text_field(number: int, value: str) -> bytes:
    return field_bytes(number, value.encode()) if value else b""


class Resource:
    """One stored xDS message, encoded once: as a DiscoveryResponse `resources` entry
    (an Any) and as a DeltaDiscoveryResponse `resources` entry (a Resource with its name
    and version, the content digest)."""

    __slots__ = ("__weakref__", "delta", "digest", "name", "sotw", "type_url")

    def __init__(self, type_url: str, name: str, digest: str, body: bytes) -> None:
        self.type_url = type_url
        self.name = name
        self.digest = digest
        packed = text_field(1, type_url) + field_bytes(2, body)  # google.protobuf.Any
        self.sotw = field_bytes(2, packed)
        self.delta = field_bytes(
            2, text_field(3, name) + text_field(1, digest) + field_bytes(2, packed)
        )


class Key(NamedTuple):
    """A variant (a tuple: hashed and compared in C, as it is per proxy on every push)."""

    tenant: str  # account id
    node_id: str  # mesh/<mesh>/<kind>/<name>
    consumer: str
    interception: str
    # Declared by an explicit-mode proxy; 0 = the default (always 0 when redirected).
    app_port: int = 0
    ingress_port: int = 0
    egress_port: int = 0

    @property
    def mesh(self) -> str:
        return self.node_id.split("/")[1]

    @property
    def kind(self) -> str:
        return self.node_id.split("/")[2]

    @property
    def name(self) -> str:
        return self.node_id.split("/", 3)[3]


NOTHING: Mapping[str, Resource] = MappingProxyType({})  # a type without resources


class Config:
    """A stored configuration's content: its type versions and, per type, its bucket.
    Content-addressed (a type version names its resources), so every variant of a mesh
    with the same type versions shares one (the 1,000 proxies one change reaches with
    identical configurations are one Config, built once per load, not 1,000)."""

    __slots__ = ("__weakref__", "resources", "type_versions")

    def __init__(
        self, type_versions: dict[str, str], resources: dict[str, dict[str, Resource]]
    ) -> None:
        self.type_versions = type_versions
        self.resources = resources


class Entry:
    """A variant's configuration as stored: `version` None when it has none (not compiled
    yet, or the proxy was deleted): every type is then empty. What it serves is its
    `config`, shared with the variants of the same content. An entry built from a publish
    is shared by the variants it reached with that version (`key` None)."""

    __slots__ = ("config", "key", "resources", "seq", "type_versions", "version")

    def __init__(
        self,
        key: Key | None,
        version: str | None,
        seq: int,  # the stored version's row id: a later store has a larger one
        type_versions: dict[str, str] | None = None,
        resources: dict[str, dict[str, Resource]] | None = None,
        config: Config | None = None,
    ) -> None:
        if config is None:
            config = Config(dict(type_versions or {}), dict(resources or {}))
        self.key = key
        self.version = version
        self.seq = seq
        self.config = config
        self.type_versions = config.type_versions
        self.resources = config.resources

    def of(self, type_url: str) -> Mapping[str, Resource]:
        return self.resources.get(type_url, NOTHING)


Watcher = Callable[[Entry], None]


class Bucket(dict):
    """{name: Resource} of one type at one type version of a mesh: the same object for
    every variant serving that type version (weakly cached, like the resources). Complete
    before any stream sees it, and never changed after."""

    __slots__ = ("__weakref__", "_sorted")

    def sorted_items(self) -> list[tuple[str, Resource]]:
        """Its items by name, sorted once for every stream serving it."""
        try:
            return self._sorted
        except AttributeError:
            self._sorted = sorted(self.items())
            return self._sorted


def sorted_items(resources: Mapping[str, Resource]) -> list[tuple[str, Resource]]:
    if type(resources) is Bucket:
        return resources.sorted_items()
    return sorted(resources.items())


class PushMemo:
    """What a push builds once for every stream serving the same buckets (delta steps,
    SotW wildcard responses): keyed by an identity that includes the buckets' ids, each
    value held with its buckets, so a hit is checked to be about the same objects and an
    id is never reused while cached. Bounded: cleared when full (a push needs a few)."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._items: dict[tuple, tuple[tuple[Bucket, ...], object]] = {}

    def get(self, ident: tuple, buckets: tuple[Bucket, ...]) -> object | None:
        found = self._items.get(ident)
        if found is None:
            return None
        held, value = found
        return value if all(map(operator.is_, held, buckets)) else None

    def put(self, ident: tuple, buckets: tuple[Bucket, ...], value: object) -> object:
        if len(self._items) >= self._size:
            self._items.clear()
        self._items[ident] = (buckets, value)
        return value


def _content(versions: Mapping[str, str]) -> tuple[str, ...] | None:
    """A configuration's identity within its mesh: its type versions in TYPES order (None
    when one is missing, which no stored version has; such a row shares nothing)."""
    try:
        return tuple(versions[t] for t in TYPES)
    except KeyError:
        return None


def _own_entries(rows: list[tuple[Key, int, str]], config: Config) -> list[tuple[Key, Entry]]:
    return [(key, Entry(key, version, seq, config=config)) for key, seq, version in rows]


def _shared_entries(rows: list[tuple[Key, int, str]], config: Config) -> list[tuple[Key, Entry]]:
    low: dict[str, int] = {}
    for _, seq, version in rows:
        if version not in low or seq < low[version]:
            low[version] = seq
    shared = {version: Entry(None, version, seq, config=config) for version, seq in low.items()}
    return [(key, shared[version]) for key, _, version in rows]


class ManifestGone(LookupError):
    """A stored version's manifest was asked for after it left the history."""


class ConfigCache:
    """Entries of watched variants. Lives on one event loop; `load` runs in threads."""

    def __init__(self) -> None:
        self.entries: dict[Key, Entry] = {}
        self.watchers: dict[Key, set[Watcher]] = {}
        # Each watched key → the Key object the watchers are filed under: a key built from
        # a published message is swapped for it, so the lookups of a push compare by
        # identity, not field by field.
        self.canonical: dict[Key, Key] = {}
        self._encoded: weakref.WeakValueDictionary[tuple, Resource] = weakref.WeakValueDictionary()
        self._buckets: weakref.WeakValueDictionary[tuple, Bucket] = weakref.WeakValueDictionary()
        self._empty: set[tuple] = set()  # type versions with no resources (a few per mesh)
        # (mesh id, type versions as stored JSON text) → the Config of that content
        self._configs: weakref.WeakValueDictionary[tuple, Config] = weakref.WeakValueDictionary()
        self._current_sql: tuple[str, list] | None = None  # see _current
        self._encoded_lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._to_swap: deque[tuple[Key, Entry]] = deque()  # offered, not swapped in yet
        self._swapping = False

    # -------------------------------------------------------------- watching (loop)

    async def watch(self, key: Key, watcher: Watcher) -> Entry | None:
        """Register a stream's interest; the variant's entry (loaded now if this replica
        had no stream on it), or None when it has no stored version yet."""
        self.loop = asyncio.get_running_loop()
        key = self.canonical.setdefault(key, key)
        self.watchers.setdefault(key, set()).add(watcher)
        if key not in self.entries:
            entry = await asyncio.to_thread(self.load, key)
            self._swap(key, entry)
        entry = self.entries.get(key)
        return entry if entry is not None and entry.version is not None else None

    def unwatch(self, key: Key, watcher: Watcher) -> None:
        watchers = self.watchers.get(key)
        if watchers is None:
            return
        watchers.discard(watcher)
        if not watchers:
            del self.watchers[key]
            self.canonical.pop(key, None)
            self.entries.pop(key, None)

    def watched(self) -> list[Key]:
        return list(self.watchers)

    def _swap(self, key: Key, entry: Entry) -> None:
        """Install a freshly loaded entry unless a newer one is in place; tell watchers."""
        old = self.entries.get(key)
        if old is not None:
            if old.version == entry.version:
                return
            # A load that finished late must not replace a newer version; a variant that
            # is gone (version None) always replaces what was there.
            if entry.version is not None and old.seq > entry.seq:
                return
        watchers = self.watchers.get(key)
        if not watchers:
            return  # nobody watches it any more
        self.entries[key] = entry
        if entry.version is None and (old is None or old.version is None):
            return  # never compiled yet: nothing to tell (an empty push would wipe a proxy)
        for watcher in tuple(watchers):
            watcher(entry)

    def offer(self, entries: Iterable[tuple[Key, Entry]]) -> None:
        """From any thread: install loaded (key, entry) pairs on the loop, in the order
        offered."""
        if self.loop is None:
            return
        entries = list(entries)
        if entries:
            self.loop.call_soon_threadsafe(self._queue_swaps, entries)

    def _queue_swaps(self, entries: list[tuple[Key, Entry]]) -> None:
        self._to_swap.extend(entries)
        if not self._swapping:
            self._swapping = True
            self._swap_some()

    def _swap_some(self) -> None:
        """Swap in SWAP_SLICE entries, then give the loop back: the streams they woke were
        scheduled first, so they write (and their proxies start on the change) before the
        next slice is swapped in, instead of after all 1,000."""
        pending = self._to_swap
        for _ in range(min(SWAP_SLICE, len(pending))):
            self._swap(*pending.popleft())
        if pending:
            self.loop.call_soon(self._swap_some)
        else:
            self._swapping = False

    # -------------------------------------------------------------- loading (threads)

    def load(self, key: Key) -> Entry:
        """Read a variant's current stored version (runs in a thread)."""
        return self.load_many([key])[0]

    def load_many(self, keys: list[Key]) -> list[Entry]:
        """Read the current stored version of each key: per mesh, one query for the
        variants' versions, one for the manifests of type versions this replica has not
        seen (one stored version each) and one for the resources not encoded here yet, so
        the publish of a change reaching 1,000 proxies is a handful of small queries."""
        from django.db import close_old_connections

        close_old_connections()
        try:
            by_mesh: dict[tuple[str, str], list[Key]] = {}
            for key in keys:
                by_mesh.setdefault((key.tenant, key.mesh), []).append(key)
            out: list[Entry] = []
            for (tenant, mesh), group in by_mesh.items():
                wanted = set(group)
                prefix = f"mesh/{mesh}/"
                # Per distinct type versions (the variants of one compile share most of
                # them): the decoded versions and [(key, seq, version)].
                found: dict[object, tuple[int, int, dict, list]] = {}
                for kind, name, *variant, mesh_id, seq, version, types_text in self._current(
                    tenant, mesh, {k.name for k in group}
                ):
                    key = Key(tenant, prefix + kind + "/" + name, *variant)
                    if key not in wanted:
                        continue
                    wanted.discard(key)
                    same = found.get(types_text)
                    if same is None:
                        versions = json.loads(types_text or "{}")
                        if not all(t in versions for t in TYPES):
                            # Not expected: the missing types are read from this row's own
                            # manifest, so it shares with no other row.
                            rows = [(key, seq, version)]
                            found[(types_text, seq)] = (mesh_id, seq, versions, rows)
                            continue
                        same = found[types_text] = (mesh_id, seq, versions, [])
                    same[3].append((key, seq, version))
                out.extend(Entry(key, None, 0) for key in group if key in wanted)
                if found:
                    out.extend(entry for _, entry in self._entries(found))
            return out
        finally:
            close_old_connections()

    def _current(self, tenant: str, mesh: str, names: set[str]) -> Iterable[tuple]:
        """(*VARIANT_FIELDS, mesh id, stored version id, version, type versions as JSON text)
        of the mesh's compiled variants of these proxy names. On PostgreSQL the statement
        is built by the ORM once per process and the names are one JSON parameter (not a
        quoted literal per name): a publish reaching 1,000 proxies runs it once per slice."""
        from django.db import connection
        from django.db.models import TextField
        from django.db.models.expressions import RawSQL
        from django.db.models.functions import Cast

        from meshapi.models import ProxyConfig
        from meshapi.models.proxies import VARIANT_FIELDS

        def query(tenant: object, mesh: object, names: object):
            return (
                ProxyConfig.objects.filter(
                    tenant__account_id=tenant,
                    mesh__name=mesh,
                    name__in=names,
                    current__isnull=False,
                )
                .annotate(types_text=Cast("current__manifest__type_versions", TextField()))
                .values_list(
                    *VARIANT_FIELDS, "mesh_id", "current_id", "current__version", "types_text"
                )
            )

        if connection.vendor != "postgresql" or len(names) <= 10:
            return query(tenant, mesh, names)
        if self._current_sql is None:
            marks = (":tenant:", ":mesh:", ":names:")  # no tenant, mesh or JSON is one
            names_sql = RawSQL("SELECT jsonb_array_elements_text(%s::jsonb)", [marks[2]])
            sql, params = query(marks[0], marks[1], names_sql).query.sql_with_params()
            self._current_sql = (sql, [marks.index(p) if p in marks else p for p in params])
        sql, template = self._current_sql
        values = (tenant, mesh, json.dumps(sorted(names)))
        params = [values[p] if isinstance(p, int) else p for p in template]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def _entries(
        self, found: dict[object, tuple[int, int, dict, list]], shared: bool = False
    ) -> list[tuple[Key, Entry]]:
        """(key, entry) for stored variants of one mesh, grouped by their type versions:
        one Config per group (kept weakly, so a later load of the same content shares it).
        A type version already cached is its bucket, shared; a new one is built from the
        manifest of one stored version that has it, and each resource missing from the
        replica is read and encoded once. `shared`: the variants of a group with the same
        version share one Entry too, with the group's lowest seq (`published` groups one
        compile's rows: any later compile's are higher)."""
        mesh_id = next(iter(found.values()))[0]
        out: list[tuple[Key, Entry]] = []
        entries = _shared_entries if shared else _own_entries
        todo: list[tuple[object, int, dict, list]] = []
        with self._encoded_lock:
            for ident, (_, seq, versions, rows) in found.items():
                content = _content(versions)
                config = self._configs.get((mesh_id, content)) if content else None
                if config is None:
                    todo.append((ident, seq, versions, rows))
                else:
                    out.extend(entries(rows, config))
        if not todo:
            return out
        # Per type: type version → its bucket (None: no resources). A type version missing
        # from a row's type_versions (not expected) is keyed by the row's seq instead.
        plan: dict[str, dict[object, Bucket | None]] = {t: {} for t in TYPES}
        source: dict[tuple[str, object], int] = {}  # (type, type version) → seq to read
        with self._encoded_lock:
            for _, seq, versions, _ in todo:
                for type_url in TYPES:
                    known = plan[type_url]
                    type_version = versions.get(type_url, seq)
                    if type_version in known:
                        continue
                    ident = (mesh_id, type_url, type_version)
                    if ident in self._empty:
                        known[type_version] = None
                        continue
                    known[type_version] = self._buckets.get(ident)
                    if known[type_version] is None:
                        source[(type_url, type_version)] = seq
        if source:
            self._build(mesh_id, source, plan)
        fresh: dict[tuple, Config] = {}
        for _, seq, versions, rows in todo:
            buckets: dict[str, dict[str, Resource]] = {}
            for type_url in TYPES:
                bucket = plan[type_url].get(versions.get(type_url, seq))
                if bucket is not None:
                    buckets[type_url] = bucket
            config = Config(versions, buckets)
            content = _content(versions)
            if content:
                fresh[(mesh_id, content)] = config
            out.extend(entries(rows, config))
        with self._encoded_lock:
            self._configs.update(fresh)
        return out

    def _build(
        self,
        mesh_id: int,
        source: dict[tuple[str, object], int],
        plan: dict[str, dict[object, Bucket | None]],
    ) -> None:
        """Buckets of type versions new to the replica, from one stored manifest each."""
        from django.db.models import TextField
        from django.db.models.functions import Cast

        from meshapi.models import ConfigResource, ProxyVersion

        # Versions of one (mesh, version) share a manifest: decoded once.
        rows = list(
            ProxyVersion.objects.filter(pk__in=set(source.values()))
            .annotate(manifest_text=Cast("manifest__resources", TextField()))
            .values_list("pk", "manifest_id", "manifest_text")
        )
        by_manifest = {manifest: text for _, manifest, text in rows}
        manifests = {manifest: json.loads(text or "{}") for manifest, text in by_manifest.items()}
        decoded = {seq: manifests[manifest] for seq, manifest, _ in rows}
        if len(decoded) < len(set(source.values())):
            # Trimmed from history since (a published version far behind the stored ones):
            # nothing here may be taken as "no resources".
            raise ManifestGone(sorted(set(source.values()) - decoded.keys()))
        fresh: dict[tuple, Bucket] = {}
        missing: dict[tuple[str, str], list[tuple[Bucket, str]]] = {}
        with self._encoded_lock:
            for (type_url, type_version), seq in source.items():
                names = decoded.get(seq, {}).get(type_url)
                cacheable = isinstance(type_version, str)
                if not names:
                    if cacheable:
                        self._empty.add((mesh_id, type_url, type_version))
                    continue
                bucket = plan[type_url][type_version] = Bucket()
                if cacheable:
                    fresh[(mesh_id, type_url, type_version)] = bucket
                for name, digest in names.items():
                    known = self._encoded.get((mesh_id, type_url, digest, name))
                    if known is not None:
                        bucket[name] = known
                    else:
                        missing.setdefault((type_url, digest), []).append((bucket, name))
        if missing:
            bodies = ConfigResource.objects.filter(
                mesh_id=mesh_id, digest__in={d for _, d in missing}
            ).values_list("type_url", "digest", "body")
            with self._encoded_lock:
                for type_url, digest, body in bodies:
                    for bucket, name in missing.get((type_url, digest), ()):
                        ident = (mesh_id, type_url, digest, name)
                        resource = self._encoded.get(ident)
                        if resource is None:
                            resource = Resource(type_url, name, digest, bytes(body))
                            self._encoded[ident] = resource
                        bucket[name] = resource
        with self._encoded_lock:
            self._buckets.update(fresh)  # complete now: other loads may share them

    def published(
        self, groups: Iterable[tuple[Mapping, list[tuple[Key, object]]]]
    ) -> tuple[list[tuple[Key, Entry]], list[Key]]:
        """(key, entry) for published versions, from what the messages carry (the stored
        version's id and type versions, workers/publish.py): the variants' rows are not
        read, and nothing at all is when this replica already holds that content, as it
        does after the first of 1,000 identical proxies. `groups`: (what one compile's
        messages share, [(key, its seq)]); the keys of one group with one version share
        an Entry (`Entry.key` None) ordered by the group's lowest seq, never with another
        group's (several compiles may be read at once). Returns them and the keys that
        must be loaded from the database instead: a message without those fields (an
        older publisher), a proxy gone (a late "gone" must not wipe a newer version: only
        the database says which is current), a variant whose entry has no version, and a
        version whose manifest already left the history. Runs in a thread."""
        from django.db import close_old_connections

        out: list[tuple[Key, Entry]] = []
        rest: list[Key] = []
        by_mesh: dict[int, dict[tuple, tuple[int, int, dict, list]]] = {}
        entries = self.entries
        for index, (common, keys) in enumerate(groups):
            version, mesh_id, types = (
                common.get("version"),
                common.get("meshId"),
                common.get("types"),
            )
            if (
                not isinstance(version, str)
                or type(mesh_id) is not int
                or not isinstance(types, list)
                or len(types) != len(TYPES)
                or not all(isinstance(t, str) for t in types)
            ):
                rest.extend(key for key, _ in keys)
                continue
            found = by_mesh.setdefault(mesh_id, {})
            content = tuple(types)
            rows = None
            for key, seq in keys:
                entry = entries.get(key)
                if entry is None or entry.version is None or type(seq) is not int:
                    rest.append(key)
                    continue
                if rows is None:
                    # Per group: two compiles' rows of one version must not share an
                    # Entry (its seq would be the older compile's).
                    versions = dict(zip(TYPES, types, strict=True))
                    rows = []
                    found[(content, index)] = (mesh_id, seq, versions, rows)
                rows.append((key, seq, version))
        by_mesh = {mesh_id: found for mesh_id, found in by_mesh.items() if found}
        if not by_mesh:
            return out, rest
        close_old_connections()
        try:
            for found in by_mesh.values():
                try:
                    out.extend(self._entries(found, shared=True))
                except ManifestGone:
                    rest.extend(key for *_, rows in found.values() for key, _, _ in rows)
        finally:
            close_old_connections()
        return out, rest

    def stored_versions(self, keys: list[Key]) -> dict[Key, str | None]:
        """The current stored version of each key, one query per mesh (the poll)."""
        from django.db import close_old_connections

        from meshapi.models import ProxyConfig
        from meshapi.models.proxies import VARIANT_FIELDS

        close_old_connections()
        by_mesh: dict[tuple[str, str], list[Key]] = {}
        for key in keys:
            by_mesh.setdefault((key.tenant, key.mesh), []).append(key)
        out: dict[Key, str | None] = dict.fromkeys(keys)
        try:
            for (tenant, mesh), group in by_mesh.items():
                rows = ProxyConfig.objects.filter(
                    tenant__account_id=tenant, mesh__name=mesh, name__in={k.name for k in group}
                ).values_list(*VARIANT_FIELDS, "current__version")
                for kind, name, *variant, version in rows:
                    key = Key(tenant, f"mesh/{mesh}/{kind}/{name}", *variant)
                    if key in out:
                        out[key] = version
        finally:
            close_old_connections()
        return out


class CacheRefresher:
    """Keeps a cache current: Redis pub/sub, re-read on (re)subscribe, slow poll."""

    def __init__(self, cache: ConfigCache, poll_seconds: float = POLL_SECONDS) -> None:
        self.cache = cache
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.subscribed = threading.Event()  # set while subscribed (tests wait on it)
        self.resubscriptions = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="xds-refresher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _reload(self, keys: list[Key]) -> None:
        # In slices: the streams of the first ones are written to while the next load.
        for start in range(0, len(keys), LOAD_SLICE):
            entries = self.cache.load_many(keys[start : start + LOAD_SLICE])
            self.cache.offer((entry.key, entry) for entry in entries)

    def _reread_all(self) -> None:
        """Reload every watched key whose stored version differs from the cached one."""
        keys = self.cache.watched()
        if not keys:
            return
        stored = self.cache.stored_versions(keys)
        stale = []
        for key in keys:
            entry = self.cache.entries.get(key)
            if entry is None or entry.version != stored.get(key):
                stale.append(key)
        self._reload(stale)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with publish.subscribe() as subscription:
                    self.subscribed.set()
                    self.resubscriptions += 1
                    log.info("xds: subscribed to configuration updates; re-reading stored versions")
                    self._reread_all()
                    next_poll = time.monotonic() + self.poll_seconds
                    while not self._stop.is_set():
                        # A compile publishes its versions as one batch: take it and
                        # whatever else is already waiting, then load them in one go.
                        batch = subscription.get_groups(timeout=0.5, limit=MAX_BATCH)
                        if batch:
                            self._handle(batch)
                        if time.monotonic() >= next_poll:
                            self._reread_all()
                            next_poll = time.monotonic() + self.poll_seconds
            except Exception:  # noqa: BLE001 - Redis away: poll, then resubscribe
                self.subscribed.clear()
                log.warning("xds: configuration subscription lost; retrying", exc_info=True)
                try:
                    self._reread_all()
                except Exception:  # noqa: BLE001 - the database may be away too
                    log.warning("xds: re-reading stored versions failed", exc_info=True)
                self._stop.wait(RECONNECT_SECONDS)
        self.subscribed.clear()
        from django.db import connections

        connections.close_all()  # this thread's own connection

    def _handle(self, groups: list[publish.Group]) -> None:
        canonical = self.cache.canonical
        entries = self.cache.entries
        # key → (its group, seq): the last published for a key wins (seq decides anyway).
        stale: dict[Key, tuple[int, object]] = {}
        for index, (common, rows) in enumerate(groups):
            tenant, version = str(common.get("tenant")), common.get("version")
            for proxy, consumer, interception, seq, app, ingress, egress in rows:
                key = canonical.get(
                    Key(
                        tenant,
                        str(proxy),
                        str(consumer),
                        str(interception),
                        int(app or 0),
                        int(ingress or 0),
                        int(egress or 0),
                    )
                )
                if key is None:
                    continue  # not watched here
                entry = entries.get(key)
                if entry is not None and entry.version == version:
                    continue
                stale[key] = (index, seq)
        if not stale:
            return
        keys_of: dict[int, list[tuple[Key, object]]] = {}
        for key, (index, seq) in stale.items():
            keys_of.setdefault(index, []).append((key, seq))
        loaded, rest = self.cache.published(
            (groups[index].common, keys) for index, keys in keys_of.items()
        )
        self.cache.offer(loaded)
        self._reload(rest)
