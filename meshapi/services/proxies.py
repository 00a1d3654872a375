"""Stored proxy configuration: written by the compile pipeline, read by the native API.

Writing (workers/pipeline.py, under the mesh's compile lock): `store` keeps only versions
that changed, serializes each new resource once (content-addressed per mesh, shared by
every proxy and version using it), appends history (bounded to HISTORY_LIMIT versions
per proxy), and `record_compiled` moves the mesh's compiled revision forward only.

Reading (meshapi/api/proxies.py): a proxy's configuration as Envoy JSON, its history, a
unified diff between two stored versions, and variants compiled on demand.
"""

import difflib
import json
import operator
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone
from google.protobuf import json_format

from meshapi.models import (
    CompileState,
    ConfigManifest,
    ConfigResource,
    Mesh,
    ProxyConfig,
    ProxyInstance,
    ProxyKind,
    ProxyVersion,
    VirtualGateway,
    VirtualNode,
)
from meshapi.models.proxies import HISTORY_LIMIT, VARIANT_FIELDS
from meshapi.services.sql import binary_cursor
from tenants.models import Tenant
from workers import publish
from workers.compiler import xds
from workers.compiler.context import CONSUMERS, INTERCEPTIONS
from workers.pipeline import DEFAULT_VARIANT

if TYPE_CHECKING:
    from workers.compiler import Snapshot
    from workers.loader import LoadedMesh
    from workers.pipeline import CompileResult, Key

# How the API names resource types, in the order an xDS server sends them.
TYPE_NAMES = {
    xds.CLUSTER: "clusters",
    xds.ENDPOINT: "endpoints",
    xds.LISTENER: "listeners",
    xds.ROUTE: "routes",
    xds.SECRET: "secrets",
}
KIND_LABELS = {ProxyKind.VIRTUAL_NODE: "Virtual node", ProxyKind.VIRTUAL_GATEWAY: "Virtual gateway"}


class ProxyNotFound(LookupError):
    """An unknown mesh, proxy or stored version; the message says which."""


class BadVariant(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# ---------------------------------------------------------------- writing (pipeline)


def lock_compile_state(mesh_id: int) -> CompileState | None:
    """The mesh's compile state, locked until the transaction ends; None if the mesh is gone."""
    state = CompileState.objects.select_for_update().filter(mesh_id=mesh_id).first()
    if state is not None:
        return state
    if not Mesh.objects.filter(pk=mesh_id).exists():
        return None
    try:
        with transaction.atomic():
            CompileState.objects.create(mesh_id=mesh_id)
    except IntegrityError:  # created by a concurrent compile, or the mesh was just deleted
        pass
    return CompileState.objects.select_for_update().filter(mesh_id=mesh_id).first()


def has_uncompiled_variants(mesh_id: int) -> bool:
    return ProxyConfig.objects.filter(mesh_id=mesh_id, current__isnull=True).exists()


def variant_ttl() -> timedelta:
    """How long a variant other than the default is kept with nothing using it."""
    return timedelta(seconds=settings.MESHPLANE_VARIANT_TTL_SECONDS)


def unused_variants(mesh_id: int, candidates: Mapping["Key", int], now: datetime) -> list["Key"]:
    """Of `candidates` (variants other than the default, key → pk), those nothing uses: no
    instance of the proxy declaring that variant is connected or disconnected less than
    the TTL ago, and it was asked for more than the TTL ago. One query, whatever the
    number of variants and instances.

    The rows returned stay locked (FOR UPDATE) until the compile's transaction ends: a
    proxy asking for one meanwhile (request_variant) either renewed it first, and then it
    is not returned (the lock re-reads `requested_at`), or waits for the compile to commit
    its deletion and creates the variant again, to be compiled as one never compiled."""
    if not candidates:
        return []
    cutoff = now - variant_ttl()
    in_use = ProxyInstance.objects.filter(
        mesh_id=mesh_id, **{name: OuterRef(name) for name in VARIANT_FIELDS}
    ).filter(
        Q(connected_since__isnull=False, disconnected_at__isnull=True)
        | Q(disconnected_at__gte=cutoff)
    )
    rows = (
        ProxyConfig.objects.select_for_update()
        .filter(pk__in=list(candidates.values()), requested_at__lt=cutoff)
        .exclude(Exists(in_use))
        .order_by("pk")
        .values_list(*VARIANT_FIELDS)
    )
    return [tuple(row) for row in rows]


def stored_configs(mesh_id: int) -> dict["Key", ProxyConfig]:
    rows = ProxyConfig.objects.filter(mesh_id=mesh_id).select_related("current__manifest")
    return {variant_key(r): r for r in rows}


# A stored variant's key as the pipeline uses it: its VARIANT_FIELDS, in order.
variant_key: Callable[[ProxyConfig], "Key"] = operator.attrgetter(*VARIANT_FIELDS)


class StoredVariant(NamedTuple):
    """What a compile reads of a stored proxy variant: values, not model instances (a
    change reaching 1,000 proxies reads 1,000 of these; a tuple is the cheapest to build)."""

    pk: int
    current_id: int | None  # None until the variant's first compile
    version: str | None  # the current version's
    revision: int
    requires: frozenset[str]


def stored_variants(mesh_id: int) -> dict["Key", StoredVariant]:
    """Every stored variant of a mesh (raw rows: at 1,000 variants the ORM's per-row
    conversions cost more than the query), with its current version's `version` as this
    process knows it (_current_versions): one query in a worker that stored the mesh's
    last versions, two in another."""
    configs = connection.ops.quote_name(ProxyConfig._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.kind, p.name, p.consumer, p.interception, p.app_port, p.ingress_port,"
            " p.egress_port, p.id, p.current_id, p.revision, CAST(p.requires AS text)"
            f" FROM {configs} AS p WHERE p.mesh_id = %s",
            [mesh_id],
        )
        rows = cursor.fetchall()
    versions = _current_versions({row[8] for row in rows if row[8] is not None})
    return {
        tuple(row[:7]): StoredVariant(
            pk, current, versions.get(current), revision, _requires(requires)
        )
        for *row, pk, current, revision, requires in rows
    }


# ProxyVersion pk → its `version`, which never changes once the row is written: the
# versions this process stored (once committed) or read. Joining 1,000 variants to their
# current versions was three quarters of reading them (1,000 index probes). A database
# restored or failed over might hand a pk out again, and it comes with a new connection,
# which empties the cache (_versions). Bounded.
_VERSIONS: dict[int, str] = {}
_VERSIONS_CONNECTION: list[Any] = [None]  # the DB-API connection _VERSIONS was filled on
VERSIONS_CACHE_SIZE = 200_000


def _versions() -> dict[int, str]:
    connection.ensure_connection()
    if _VERSIONS_CONNECTION[0] is not connection.connection:
        _VERSIONS.clear()
        _VERSIONS_CONNECTION[0] = connection.connection
    elif len(_VERSIONS) >= VERSIONS_CACHE_SIZE:
        _VERSIONS.clear()
    return _VERSIONS


def _current_versions(ids: set[int]) -> dict[int, str]:
    """The `version` of each of these ProxyVersion pks (those not known here: one query)."""
    cache = _versions()
    known = {pk: version for pk in ids if (version := cache.get(pk)) is not None}
    missing = ids - known.keys()
    if missing:
        rows = list(ProxyVersion.objects.filter(pk__in=missing).values_list("pk", "version"))
        known.update(rows)
        cache.update(rows)
    return known


# `requires` JSON text → frozenset, shared by every compile in this process: a variant's
# requires rarely change, and decoding 1,000 of them was most of reading the variants.
_REQUIRES: dict[str, frozenset[str]] = {}
REQUIRES_CACHE_SIZE = 100_000


def _requires(text: Any) -> frozenset[str]:
    if not isinstance(text, str):
        return frozenset(_loads(text) or ())
    found = _REQUIRES.get(text)
    if found is None:
        if len(_REQUIRES) >= REQUIRES_CACHE_SIZE:
            _REQUIRES.clear()
        found = _REQUIRES[text] = frozenset(json.loads(text) or ())
    return found


# A current version's warnings or metadata JSON text → its value, shared the same way:
# 1,000 proxies of one version hold the same few texts. Read only (compared, never changed).
_DECODED: dict[str, Any] = {}


def _decoded(text: Any) -> Any:
    if not isinstance(text, str):
        return _loads(text)
    found = _DECODED.get(text)
    if found is None:
        if len(_DECODED) >= REQUIRES_CACHE_SIZE:
            _DECODED.clear()
        found = _DECODED[text] = json.loads(text)
    return found


def _loads(value: Any) -> Any:
    """A JSON column as the database driver returned it (text, or already decoded)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _common(loaded: "LoadedMesh", version: str | None, snapshot: "Snapshot | None" = None) -> dict:
    """What workers/publish.py sends once for the variants of one version; with the
    snapshot, its type versions and mesh id ride along so a replica need not read them
    back. `version` None: the variants' proxies are gone."""
    common = {
        "tenant": loaded.account_id,
        "mesh": loaded.name,
        "meshUid": loaded.uid,
        "version": version,
        "revision": loaded.revision,
    }
    if snapshot is not None:
        versions = snapshot.type_versions
        common.update(meshId=loaded.mesh_id, types=[versions.get(t) for t in xds.TYPE_ORDER])
    return common


def _row(loaded: "LoadedMesh", key: "Key", seq: int | None) -> tuple:
    """A variant's row in its group (workers.publish.ROW_FIELDS); an explicit-mode
    proxy's declared ports, None for the defaults."""
    kind, name, consumer, interception, app_port, ingress_port, egress_port = key
    ports = (
        (app_port, ingress_port, egress_port)
        if app_port or ingress_port or egress_port
        else (None, None, None)
    )
    return (f"mesh/{loaded.name}/{kind}/{name}", consumer, interception, seq, *ports)


class StoreResult(NamedTuple):
    """What `store` did: the keys whose version changed, what to publish after commit
    (grouped by version: the 1,000 proxies of one change are one group), and the variants
    (pks) that gained a version over an older one, whose history `trim_history` bounds
    once the groups are out."""

    changed: list["Key"]
    groups: list[publish.Group]
    grown: list[int]


def store(
    loaded: "LoadedMesh",
    snapshots: Mapping["Key", tuple["Snapshot", frozenset[str]]],
    stored: Mapping["Key", StoredVariant],
    gone: Iterable["Key"],
    now: datetime,
) -> StoreResult:
    """Store the snapshots whose version changed; drop the variants of proxies that no
    longer exist.

    A fixed number of statements whatever the number of proxies: on PostgreSQL the new
    versions are one INSERT and the variants one UPDATE over arrays (see _insert_versions,
    _update_variants). History is not trimmed here: nothing a replica reads depends on it,
    so the pipeline trims after publishing (`trim_history`)."""
    changed: list[Key] = []
    requires: dict[Key, Collection[str]] = {}
    updates: dict[int, _Update] = {}  # ProxyConfig pk → what to write
    unchanged: dict[int, Snapshot] = {}  # current version pk → compiled to it again
    new_rows: list[ProxyConfig] = []
    for key, (snapshot, deps) in snapshots.items():
        row = stored.get(key)
        if row is None:
            new_rows.append(
                ProxyConfig(
                    tenant_id=loaded.tenant_id,
                    mesh_id=loaded.mesh_id,
                    requires=sorted(deps),
                    **dict(zip(VARIANT_FIELDS, key, strict=True)),
                )
            )
            changed.append(key)
            continue
        if row.revision > loaded.revision:
            continue  # a newer compile stored this proxy already: never go back
        same_requires = row.requires == frozenset(deps)
        if row.current_id is not None and row.version == snapshot.version:
            # Same configuration; warnings and metadata do not change the version.
            unchanged[row.current_id] = snapshot
            if not same_requires:
                updates[row.pk] = _Update(row.current_id, row.revision, deps, True)
            continue
        requires[key] = deps
        if not same_requires:
            updates[row.pk] = _Update(row.current_id, row.revision, deps, True)
        changed.append(key)
    pks = {key: row.pk for key, row in stored.items()}
    if new_rows:
        for row in ProxyConfig.objects.bulk_create(new_rows):
            key = variant_key(row)
            pks[key] = row.pk
            requires[key] = row.requires
    _store_resources(loaded.mesh_id, (snapshots[k][0] for k in changed))
    version_ids = _insert_versions(
        loaded.mesh_id, [(pks[key], snapshots[key][0]) for key in changed], loaded.revision, now
    )
    groups: dict[str, publish.Group] = {}  # version → its group
    for key in changed:
        pk = pks[key]
        rewrite = pk in updates
        updates[pk] = _Update(version_ids[pk], loaded.revision, requires[key], rewrite)
        snapshot = snapshots[key][0]
        group = groups.get(snapshot.version)
        if group is None:
            common = _common(loaded, snapshot.version, snapshot)
            group = groups[snapshot.version] = publish.Group(common, [])
        group.rows.append(_row(loaded, key, version_ids[pk]))
    out = list(groups.values())
    # Remembered once committed: SQLite may hand a rolled-back pk out again.
    stored_versions = [(version_ids[pks[key]], snapshots[key][0].version) for key in changed]
    transaction.on_commit(lambda: _versions().update(stored_versions))
    _update_variants(updates)
    if unchanged:
        _update_notes(unchanged)
    grown = [pks[key] for key in changed if key in stored and stored[key].current_id is not None]
    gone = [k for k in gone if k in pks]
    if gone:
        ProxyConfig.objects.filter(pk__in=[pks[k] for k in gone]).delete()
        out.append(publish.Group(_common(loaded, None), [_row(loaded, key, None) for key in gone]))
    return StoreResult(changed, out, grown)


def _update_notes(unchanged: Mapping[int, "Snapshot"]) -> None:
    """Rewrite the warnings and metadata of current versions (pk → the snapshot compiled
    to that version again) where they moved: they do not change a version."""
    versions = connection.ops.quote_name(ProxyVersion._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, CAST(warnings AS text), CAST(metadata AS text)"
            f" FROM {versions} WHERE id IN ({', '.join(['%s'] * len(unchanged))})",
            list(unchanged),
        )
        rows = cursor.fetchall()
    touched = []
    for pk, warnings_text, metadata_text in rows:
        snapshot = unchanged[pk]
        warnings, metadata = list(snapshot.warnings), dict(snapshot.metadata)
        if (_decoded(warnings_text) or []) != warnings or (
            _decoded(metadata_text) or {}
        ) != metadata:
            touched.append(ProxyVersion(pk=pk, warnings=warnings, metadata=metadata))
    if touched:
        ProxyVersion.objects.bulk_update(touched, ["warnings", "metadata"])


@dataclass(frozen=True)
class _Update:
    current_id: int | None
    revision: int
    requires: Collection[str]  # stored sorted
    requires_changed: bool  # False: the stored `requires` stays as it is


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _insert_versions(
    mesh_id: int, rows: list[tuple[int, "Snapshot"]], revision: int, now: datetime
) -> dict[int, int]:
    """Insert one ProxyVersion per (proxy pk, snapshot); returns proxy pk → version pk.

    A version's manifest and type versions are stored once per (mesh, version), in
    ConfigManifest: the manifests of these versions not stored yet are inserted, the
    others found, and each version row refers to its own. Proxies compiled to the same
    version share one manifest, and those with the same warnings and metadata too share
    one encoding of them: sent and parsed into jsonb once by PostgreSQL (1,000 clients of
    one backend are one manifest and one set of notes). One statement on PostgreSQL."""
    if not rows:
        return {}
    # version → its manifest's (type versions, resources) JSON; (version, warnings,
    # metadata JSON) → its index in `notes`. Proxies sharing a snapshot share its metadata
    # object: encoded once per object.
    manifests: dict[str, tuple[str, str]] = {}
    index: dict[tuple[str, tuple[str, ...], str], int] = {}
    metadata_json: dict[int, str] = {}
    notes: tuple[list[str], ...] = ([], [], [])
    proxy_ids: list[int] = []
    positions: list[int] = []
    for proxy_id, snapshot in rows:
        metadata = metadata_json.get(id(snapshot.metadata))
        if metadata is None:
            metadata = metadata_json[id(snapshot.metadata)] = _json(dict(snapshot.metadata))
        ident = (snapshot.version, snapshot.warnings, metadata)
        position = index.get(ident)
        if position is None:
            position = index[ident] = len(index) + 1
            for column, value in zip(
                notes,
                (snapshot.version, _json(list(snapshot.warnings)), metadata),
                strict=True,
            ):
                column.append(value)
            if snapshot.version not in manifests:
                manifests[snapshot.version] = (
                    _json(dict(snapshot.type_versions)),
                    _json({t: dict(h) for t, h in snapshot.hashes.items() if h}),
                )
        proxy_ids.append(proxy_id)
        positions.append(position)
    if connection.vendor != "postgresql":
        manifest_ids = _manifest_ids(mesh_id, manifests)
        decoded = [
            (version, json.loads(warnings), json.loads(metadata))
            for version, warnings, metadata in zip(*notes, strict=True)
        ]
        versions = ProxyVersion.objects.bulk_create(
            ProxyVersion(
                proxy_id=proxy_id,
                version=version,
                revision=revision,
                compiled_at=now,
                manifest_id=manifest_ids[version],
                warnings=warnings,
                metadata=metadata,
            )
            for proxy_id, (version, warnings, metadata) in zip(
                proxy_ids, (decoded[position - 1] for position in positions), strict=True
            )
        )
        return {v.proxy_id: v.pk for v in versions}
    table = connection.ops.quote_name(ProxyVersion._meta.db_table)
    manifest_table = connection.ops.quote_name(ConfigManifest._meta.db_table)
    versions = list(manifests)
    # `found` sees the manifests stored before this statement, `new` returns those it
    # inserts: together, one row per version. ON CONFLICT only guards: the mesh's compile
    # lock keeps any other transaction from inserting its manifests meanwhile.
    with binary_cursor() as cursor:
        cursor.execute(
            "WITH new AS (INSERT INTO"
            f" {manifest_table} (mesh_id, version, type_versions, resources)"
            " SELECT %b, m.version, m.type_versions::jsonb, m.resources::jsonb"
            " FROM unnest(%b::text[], %b::text[], %b::text[])"
            " AS m(version, type_versions, resources)"
            " ON CONFLICT (mesh_id, version) DO NOTHING RETURNING id, version),"
            f" found AS (SELECT c.id, c.version FROM {manifest_table} AS c"
            " WHERE c.mesh_id = %b AND c.version = ANY(%b::text[])),"
            " ids AS (SELECT id, version FROM new UNION ALL SELECT id, version FROM found),"
            " n AS MATERIALIZED (SELECT n.i, n.version, n.warnings::jsonb AS warnings,"
            " n.metadata::jsonb AS metadata FROM unnest(%b::text[], %b::text[], %b::text[])"
            " WITH ORDINALITY AS n(version, warnings, metadata, i))"
            f" INSERT INTO {table} (proxy_id, version, revision, compiled_at, manifest_id,"
            " warnings, metadata)"
            " SELECT u.proxy_id, n.version, %b, %b, ids.id, n.warnings, n.metadata"
            " FROM unnest(%b::bigint[], %b::bigint[]) WITH ORDINALITY AS u(proxy_id, note, k)"
            " JOIN n ON n.i = u.note JOIN ids ON ids.version = n.version ORDER BY u.k"
            " RETURNING proxy_id, id",
            [
                mesh_id,
                versions,
                [manifests[v][0] for v in versions],
                [manifests[v][1] for v in versions],
                mesh_id,
                versions,
                *notes,
                revision,
                now,
                proxy_ids,
                positions,
            ],
        )
        out = dict(cursor.fetchall())
    if len(out) != len(set(proxy_ids)):
        raise RuntimeError(f"versions of mesh {mesh_id} stored without their manifest")
    return out


def _manifest_ids(mesh_id: int, manifests: Mapping[str, tuple[str, str]]) -> dict[str, int]:
    """version → ConfigManifest pk, inserting those not stored yet (other databases)."""
    found = dict(
        ConfigManifest.objects.filter(mesh_id=mesh_id, version__in=list(manifests)).values_list(
            "version", "id"
        )
    )
    missing = [v for v in manifests if v not in found]
    if missing:
        ConfigManifest.objects.bulk_create(
            ConfigManifest(
                mesh_id=mesh_id,
                version=version,
                type_versions=json.loads(manifests[version][0]),
                resources=json.loads(manifests[version][1]),
            )
            for version in missing
        )
        found.update(
            ConfigManifest.objects.filter(mesh_id=mesh_id, version__in=missing).values_list(
                "version", "id"
            )
        )
    return found


def _update_variants(updates: Mapping[int, _Update]) -> None:
    """Point each variant (by pk) at its new current version and revision, and rewrite its
    `requires` where that changed."""
    if not updates:
        return
    if connection.vendor != "postgresql":
        ProxyConfig.objects.bulk_update(
            [
                ProxyConfig(
                    pk=pk, current_id=u.current_id, revision=u.revision, requires=sorted(u.requires)
                )
                for pk, u in updates.items()
            ],
            ["current", "revision", "requires"],
            batch_size=500,
        )
        return
    table = connection.ops.quote_name(ProxyConfig._meta.db_table)
    pks = list(updates)
    with binary_cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS p SET current_id = u.current_id, revision = u.revision,"
            " requires = COALESCE(u.requires::jsonb, p.requires)"
            " FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::text[])"
            " AS u(id, current_id, revision, requires) WHERE p.id = u.id",
            [
                pks,
                [updates[pk].current_id for pk in pks],
                [updates[pk].revision for pk in pks],
                [
                    _json(sorted(updates[pk].requires)) if updates[pk].requires_changed else None
                    for pk in pks
                ],
            ],
        )


def _store_resources(mesh_id: int, snapshots: Iterable["Snapshot"]) -> None:
    """Serialize and insert each resource not stored yet, once, however many use it."""
    wanted: dict[tuple[str, str], Any] = {}
    seen: set[int] = set()
    for snapshot in snapshots:
        # Proxies compiled to one shared snapshot (Snapshot.for_proxy) share its hashes:
        # 1,000 clients of one backend are one pass here.
        if id(snapshot.hashes) in seen:
            continue
        seen.add(id(snapshot.hashes))
        for type_url, hashes in snapshot.hashes.items():
            bucket = snapshot.resources[type_url]
            for name, digest in hashes.items():
                wanted.setdefault((type_url, digest), bucket[name])
    if not wanted:
        return
    have = set(
        ConfigResource.objects.filter(
            mesh_id=mesh_id, digest__in={d for _, d in wanted}
        ).values_list("type_url", "digest")
    )
    rows = [
        ConfigResource(
            mesh_id=mesh_id,
            type_url=type_url,
            digest=digest,
            body=message.SerializeToString(deterministic=True),
        )
        for (type_url, digest), message in wanted.items()
        if (type_url, digest) not in have
    ]
    ConfigResource.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)


def trim_history(proxy_ids: list[int]) -> None:
    """Keep the newest HISTORY_LIMIT versions of each of these variants, in a transaction
    of its own: the pipeline runs it after the compile that added their versions has
    committed and published. It takes no compile lock: it never deletes a current version
    (the newest of its variant), a compile running meanwhile only adds newer ones, and a
    trim that fails or never runs leaves the extra versions to the variant's next trim.

    On PostgreSQL one statement finds, per variant, the version just past the limit through
    the (proxy, -id) index and deletes from there down: a few index entries per variant,
    whatever its history."""
    if not proxy_ids:
        return
    with transaction.atomic():
        if connection.vendor != "postgresql":
            ranked = (
                ProxyVersion.objects.filter(proxy_id__in=proxy_ids)
                .annotate(
                    rank=Window(RowNumber(), partition_by=[F("proxy_id")], order_by=F("id").desc())
                )
                .filter(rank__gt=HISTORY_LIMIT)
                .values_list("id", flat=True)
            )
            old = list(ranked)
            if old:
                ProxyVersion.objects.filter(pk__in=old).delete()
            return
        table = connection.ops.quote_name(ProxyVersion._meta.db_table)
        with binary_cursor() as cursor:
            # Its estimate (a correlated LIMIT per variant) passes jit_above_cost at 1,000
            # variants, and compiling the plan took longer than running it (14 of 50 ms).
            cursor.execute("SET LOCAL jit = off")
            cursor.execute(
                f"DELETE FROM {table} AS v USING ("
                " SELECT p.id AS proxy_id, (SELECT h.id FROM "
                f"{table} AS h WHERE h.proxy_id = p.id ORDER BY h.id DESC OFFSET %b LIMIT 1)"
                " AS cutoff FROM unnest(%b::bigint[]) AS p(id)) AS t"
                " WHERE v.proxy_id = t.proxy_id AND v.id <= t.cutoff",
                [HISTORY_LIMIT, proxy_ids],
            )


def record_compiled(state: CompileState, loaded: "LoadedMesh", result: "CompileResult") -> None:
    """Remember the inputs now compiled and move the mesh's compiled revision forward —
    never back, should an older compile somehow finish last."""
    Mesh.objects.filter(pk=loaded.mesh_id, compiled_revision__lt=loaded.revision).update(
        compiled_revision=loaded.revision
    )
    if state.revision > loaded.revision:
        return
    state.revision = loaded.revision
    state.inputs = loaded.fingerprint
    state.compiled_at = timezone.now()
    state.duration_ms = round(result.seconds * 1000, 2)
    state.proxies_compiled = len(result.compiled)
    state.proxies_changed = len(result.changed)
    state.full = result.full
    state.save()


def prune_orphaned_versions() -> int:
    """Delete versions whose variant is gone: what the one race named at ProxyVersion.proxy
    (no database constraint) leaves behind, a mesh deleted while an older compile of it
    committed. One statement; a compile's own uncommitted versions are not visible to it."""
    versions = connection.ops.quote_name(ProxyVersion._meta.db_table)
    configs = connection.ops.quote_name(ProxyConfig._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {versions} WHERE NOT EXISTS"
            f" (SELECT 1 FROM {configs} WHERE {configs}.id = {versions}.proxy_id)"
        )
        return cursor.rowcount


def prune_resources(mesh_id: int) -> int:
    """Delete the mesh's manifests no version refers to (prune_manifests), then its stored
    resources no kept manifest refers to. Takes the mesh's compile lock, so a compile cannot
    reuse a manifest or resource while it is being deleted."""
    with transaction.atomic():
        if lock_compile_state(mesh_id) is None:
            return 0
        prune_manifests(mesh_id)
        used: set[tuple[str, str]] = set()
        manifests = ConfigManifest.objects.filter(mesh_id=mesh_id).values_list(
            "resources", flat=True
        )
        for manifest in manifests.iterator(chunk_size=500):
            for type_url, hashes in manifest.items():
                used.update((type_url, d) for d in hashes.values())
        stale = [
            pk
            for pk, type_url, digest in ConfigResource.objects.filter(mesh_id=mesh_id).values_list(
                "pk", "type_url", "digest"
            )
            if (type_url, digest) not in used
        ]
        ConfigResource.objects.filter(pk__in=stale).delete()
        return len(stale)


def prune_manifests(mesh_id: int) -> int:
    """Delete the mesh's manifests that none of its variants' versions refers to (those of
    trimmed versions). Call it holding the mesh's compile lock: a compile refers to a
    manifest only under it. One statement; versions left without their variant
    (prune_orphaned_versions) do not count."""
    manifests = connection.ops.quote_name(ConfigManifest._meta.db_table)
    versions = connection.ops.quote_name(ProxyVersion._meta.db_table)
    configs = connection.ops.quote_name(ProxyConfig._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {manifests} WHERE mesh_id = %s AND id NOT IN"
            f" (SELECT v.manifest_id FROM {configs} AS p JOIN {versions} AS v"
            " ON v.proxy_id = p.id WHERE p.mesh_id = %s)",
            [mesh_id, mesh_id],
        )
        return cursor.rowcount


# ---------------------------------------------------------------- reading (API)


def check_variant(kind: str, consumer: str, interception: str) -> None:
    if consumer not in CONSUMERS:
        raise BadVariant("consumer", f"consumer must be one of {', '.join(CONSUMERS)}.")
    if interception not in INTERCEPTIONS:
        raise BadVariant("mode", f"mode must be one of {', '.join(INTERCEPTIONS)}.")
    if kind == ProxyKind.VIRTUAL_GATEWAY and consumer != "envoy":
        raise BadVariant("consumer", "a virtual gateway's proxy is always Envoy (consumer=envoy).")


@dataclass(frozen=True)
class ProxyRef:
    mesh: Mesh
    kind: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


def find_proxy(tenant: Tenant, mesh_name: str, kind: str, name: str) -> ProxyRef:
    """The mesh and proxy named in a URL, or ProxyNotFound saying which part is unknown."""
    model = VirtualNode if kind == ProxyKind.VIRTUAL_NODE else VirtualGateway
    mesh = Mesh.objects.filter(tenant=tenant, name=mesh_name).only("id", "name", "tenant").first()
    if mesh is None:
        raise ProxyNotFound(f"Mesh '{mesh_name}' not found.")
    if not model.objects.filter(mesh=mesh, name=name).exists():
        raise ProxyNotFound(f"{KIND_LABELS[kind]} '{name}' not found in mesh '{mesh_name}'.")
    return ProxyRef(mesh, kind, name)


def proxies_of(mesh: Mesh) -> list[tuple[str, str]]:
    """(kind, name) of every virtual node and gateway of the mesh, sorted."""
    nodes = VirtualNode.objects.filter(mesh=mesh).values_list("name", flat=True)
    gateways = VirtualGateway.objects.filter(mesh=mesh).values_list("name", flat=True)
    return sorted(
        [(ProxyKind.VIRTUAL_NODE.value, n) for n in nodes]
        + [(ProxyKind.VIRTUAL_GATEWAY.value, g) for g in gateways]
    )


def current_configs(
    mesh: Mesh, proxies: list[tuple[str, str]], consumer: str, interception: str
) -> dict[tuple[str, str], ProxyConfig]:
    """The stored variant of each proxy (a gateway's consumer is always envoy)."""
    rows = (
        ProxyConfig.objects.filter(mesh=mesh, interception=interception)
        .filter(app_port=0, ingress_port=0, egress_port=0)  # the default ports
        .filter(
            Q(kind=ProxyKind.VIRTUAL_NODE, consumer=consumer)
            | Q(kind=ProxyKind.VIRTUAL_GATEWAY, consumer="envoy")
        )
        .filter(name__in={name for _, name in proxies})
        .select_related("current")
        .defer("current__metadata")
    )
    wanted = set(proxies)
    return {(r.kind, r.name): r for r in rows if (r.kind, r.name) in wanted}


def variants_of(ref: ProxyRef) -> list[ProxyConfig]:
    return list(
        ProxyConfig.objects.filter(mesh=ref.mesh, kind=ref.kind, name=ref.name)
        .select_related("current")
        .defer("current__metadata")
    )


def variant(
    ref: ProxyRef, consumer: str, interception: str, ports: tuple[int, int, int] = (0, 0, 0)
) -> ProxyConfig | None:
    """A stored variant; `ports` (app, ingress, egress) as an explicit-mode proxy declared
    them, (0, 0, 0) for the defaults."""
    app_port, ingress_port, egress_port = ports
    return (
        ProxyConfig.objects.filter(mesh=ref.mesh, kind=ref.kind, name=ref.name)
        .filter(consumer=consumer, interception=interception)
        .filter(app_port=app_port, ingress_port=ingress_port, egress_port=egress_port)
        .select_related("current__manifest")
        .first()
    )


def request_variant(
    ref: ProxyRef, consumer: str, interception: str, ports: tuple[int, int, int] = (0, 0, 0)
) -> bool:
    """Ask for a variant to be kept compiled from now on (the next compile of the mesh
    stores it). `ports` (app, ingress, egress) only count in explicit mode: a redirected
    proxy always listens on the defaults. True if it is not stored yet (first asked for,
    or dropped as unused since): the caller enqueues a compile.

    Asking again renews a variant other than the default (`requested_at`) once half its
    TTL has passed, so that a compile cannot drop it while its proxy connects; when a
    compile is dropping it at that moment, the renewal waits for the compile's commit,
    finds the row gone and creates it again."""
    if interception != "explicit":
        ports = (0, 0, 0)
    app_port, ingress_port, egress_port = ports
    default = (consumer, interception, *ports) == DEFAULT_VARIANT
    for _ in range(3):
        try:
            with transaction.atomic():
                row, created = ProxyConfig.objects.get_or_create(
                    mesh=ref.mesh,
                    kind=ref.kind,
                    name=ref.name,
                    consumer=consumer,
                    interception=interception,
                    app_port=app_port,
                    ingress_port=ingress_port,
                    egress_port=egress_port,
                    defaults={"tenant_id": ref.mesh.tenant_id},
                )
        except IntegrityError:  # asked for at the same moment by someone else
            return False
        if created or default:
            return created
        now = timezone.now()
        renew_before = now - variant_ttl() / 2
        if row.requested_at >= renew_before:
            return False
        renewed = ProxyConfig.objects.filter(pk=row.pk, requested_at__lt=renew_before).update(
            requested_at=now
        )
        if renewed:
            return False
        # Nothing renewed: a compile dropped it (look again: it is created anew), or
        # another request renewed it first (it is found renewed).
    return False


def stored_version(config: ProxyConfig, version: str) -> ProxyVersion:
    if config.current is not None and config.current.version == version:
        return config.current
    found = (
        config.history.filter(version=version).select_related("manifest").order_by("-id").first()
    )
    if found is None:
        raise ProxyNotFound(
            f"Version '{version}' of {config.kind}/{config.name} ({config.consumer}, "
            f"{config.interception}) is not stored; the last {HISTORY_LIMIT} versions are "
            "kept (see its history)."
        )
    return found


def _messages(mesh_id: int, manifests: Iterable[Mapping]) -> dict[tuple[str, str], Any]:
    wanted = {(t, d) for m in manifests for t, hashes in m.items() for d in hashes.values()}
    rows = ConfigResource.objects.filter(
        mesh_id=mesh_id, digest__in={d for _, d in wanted}
    ).values_list("type_url", "digest", "body")
    out = {}
    for type_url, digest, body in rows:
        if (type_url, digest) in wanted and type_url in xds.MESSAGE_TYPES:
            message = xds.MESSAGE_TYPES[type_url]()
            message.ParseFromString(bytes(body))
            out[(type_url, digest)] = message
    return out


def envoy_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def resources_json(mesh_id: int, version: ProxyVersion) -> dict[str, list[dict]]:
    """{listeners|routes|clusters|endpoints|secrets: [Envoy JSON, sorted by name]}."""
    messages = _messages(mesh_id, [version.resources])
    return _render(version.resources, messages)


def _render(manifest: Mapping, messages: Mapping) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {label: [] for label in TYPE_NAMES.values()}
    for type_url, label in TYPE_NAMES.items():
        for name in sorted(manifest.get(type_url, {})):
            message = messages.get((type_url, manifest[type_url][name]))
            if message is not None:
                out[label].append(envoy_json(message))
    return out


def snapshot_json(snapshot: "Snapshot") -> dict[str, list[dict]]:
    """The same shape as `resources_json`, for a snapshot compiled on demand."""
    return {
        label: [envoy_json(m) for _, m in sorted(snapshot.of(type_url).items())]
        for type_url, label in TYPE_NAMES.items()
    }


def _text(manifest: Mapping, messages: Mapping) -> list[str]:
    lines: list[str] = []
    for type_url, label in TYPE_NAMES.items():
        for name in sorted(manifest.get(type_url, {})):
            message = messages.get((type_url, manifest[type_url][name]))
            body = json.dumps(envoy_json(message) if message else None, indent=2, sort_keys=True)
            lines.append(f"## {label[:-1]} {name}\n")
            lines.extend(line + "\n" for line in body.splitlines())
    return lines


def unified_diff(config: ProxyConfig, older: ProxyVersion, newer: ProxyVersion) -> str:
    """A unified diff of the Envoy JSON of two stored versions, resource by resource."""
    messages = _messages(config.mesh_id, [older.resources, newer.resources])
    label = f"mesh/{config.mesh.name}/{config.kind}/{config.name}"
    return "".join(
        difflib.unified_diff(
            _text(older.resources, messages),
            _text(newer.resources, messages),
            fromfile=f"{label}@{older.version}",
            tofile=f"{label}@{newer.version}",
        )
    )
