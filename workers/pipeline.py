"""compile_mesh's work, apart from Celery: lock → load → choose → compile → store → publish.

- **Lock**: the mesh's `CompileState` row, held for the whole compile, so compiles of one
  mesh follow each other (writers lock the `Mesh` row, never this one, so a long compile
  does not slow the API). A compile that got the lock after another finished the same
  revision has nothing left to do.
- **Choose** (`select_targets`): the first compile of a mesh, or a change to the mesh
  itself, compiles every proxy variant. Otherwise the stored input hashes are diffed with
  the loaded ones into changes, and a variant is compiled when `dependents` (the graph
  now) or its stored `requires` (the graph then, catching removed edges) meets a change,
  or when it has never been compiled. The inputs diffed against are exactly those the
  stored configuration was compiled from, so a change is never missed, whatever the
  revisions in between (tests/workers/test_pipeline_incremental.py checks incremental =
  full on random meshes and change sequences).
- **Variants**: (envoy, redirect) for every node and gateway, plus every (consumer,
  interception, ports) that was asked for and whose proxy still exists, until nothing uses
  it: no instance of the proxy declaring it connected or disconnected less than
  MESHPLANE_VARIANT_TTL_SECONDS ago, and asked for longer ago than that. The compile drops
  such a variant (`drop_unused`); a proxy connecting with it later asks for it again.
- **Store** only versions that changed (meshapi.services.proxies.store), record the
  revision with compare-and-set, and publish (tenant, proxy, version) after commit; only
  then trim the history of the variants that gained a version (nothing a replica reads).
"""

import gc
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from django.db import Error, transaction
from django.utils import timezone

from workers import loader, publish
from workers.compiler import (
    GATEWAY,
    NODE,
    InconsistentSnapshot,
    MeshContext,
    ProxyRequest,
    Snapshot,
    compile_proxy,
    dependents,
    requires,
)

if TYPE_CHECKING:
    from meshapi.services.proxies import StoredVariant

log = logging.getLogger(__name__)

# (kind, name, consumer, interception, app_port, ingress_port, egress_port); the ports are
# those an explicit-mode proxy declared, 0 for the default (always 0 when redirected).
Key = tuple[str, str, str, str, int, int, int]
DEFAULT_VARIANT = ("envoy", "redirect", 0, 0, 0)


class Stored(NamedTuple):
    """What the pipeline needs to know of a stored proxy variant (a tuple: a compile
    builds one per variant, 1,000 for a change reaching 1,000 proxies)."""

    requires: frozenset[str]  # "<kind> <name>" of everything it was compiled from
    compiled: bool  # has a current version


@dataclass
class CompileResult:
    mesh_id: int
    revision: int = 0
    skipped: str = ""  # why nothing was compiled: "gone", "up to date", "newer compile"
    full: bool = False
    compiled: list[Key] = field(default_factory=list)
    changed: list[Key] = field(default_factory=list)
    removed: list[Key] = field(default_factory=list)
    failed: list[Key] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        return {
            "mesh": self.mesh_id,
            "revision": self.revision,
            "skipped": self.skipped,
            "full": self.full,
            "compiled": len(self.compiled),
            "changed": len(self.changed),
            "removed": len(self.removed),
            "failed": len(self.failed),
            "ms": round(self.seconds * 1000, 1),
        }


def dep_keys(deps: Iterable[tuple[str, str]]) -> frozenset[str]:
    """(kind, name) pairs as the strings stored in `ProxyConfig.requires`."""
    return frozenset(f"{kind} {name}" for kind, name in deps)


def _with_parents(changed: Iterable[tuple[str, str]]) -> frozenset[str]:
    """A route or gateway route change is also a change of its parent (as deps.py says)."""
    out = set(changed)
    for kind, name in changed:
        if kind == "route":
            out.add(("virtualRouter", name.split("/", 1)[0]))
        elif kind == "gatewayRoute":
            out.add(("virtualGateway", name.split("/", 1)[0]))
    return dep_keys(out)


def present_proxies(ctx: MeshContext) -> set[tuple[str, str]]:
    """(kind, name) of every node and gateway of the mesh."""
    return {(NODE, n) for n in ctx.virtual_nodes} | {(GATEWAY, g) for g in ctx.virtual_gateways}


def wanted_variants(ctx: MeshContext, stored: Iterable[Key]) -> set[Key]:
    present = present_proxies(ctx)
    out = {(kind, name, *DEFAULT_VARIANT) for kind, name in present}
    out.update(key for key in stored if key[:2] in present)
    return out


def drop_unused(
    mesh_id: int, ctx: MeshContext, stored: Mapping[Key, "StoredVariant"], now: datetime
) -> set[Key]:
    """The stored variants other than the default, of proxies still present, that nothing
    uses any more (meshapi.services.proxies.unused_variants: one query, rows locked until
    the compile commits). Nothing to ask when the mesh has only default variants, nor
    when this process asked less than MESHPLANE_VARIANT_CHECK_SECONDS ago (a variant is
    dropped a day unused, by default: a few minutes later costs nothing)."""
    from meshapi.services import proxies as store

    present = present_proxies(ctx)
    candidates = {
        key: row.pk
        for key, row in stored.items()
        if key[2:] != DEFAULT_VARIANT and key[:2] in present
    }
    if not candidates or not _unused_check_due(mesh_id):
        return set()
    unused = set(store.unused_variants(mesh_id, candidates, now))
    asked = time.monotonic()
    # Counted once the compile commits: a compile rolled back has not dropped them.
    transaction.on_commit(lambda: _UNUSED_CHECKED.__setitem__(mesh_id, asked))
    return unused


_UNUSED_CHECKED: dict[int, float] = {}  # mesh id → when this process last asked


def _unused_check_due(mesh_id: int) -> bool:
    from django.conf import settings

    last = _UNUSED_CHECKED.get(mesh_id)
    return last is None or time.monotonic() - last >= settings.MESHPLANE_VARIANT_CHECK_SECONDS


def select_targets(
    ctx: MeshContext,
    inputs: Mapping[str, str],
    previous_inputs: Mapping[str, str] | None,
    stored: Mapping[Key, Stored],
) -> tuple[set[Key], bool]:
    """The variants to compile, and whether that is a full compile."""
    wanted = wanted_variants(ctx, stored)
    if previous_inputs is None:
        return wanted, True
    changed = loader.changes(previous_inputs, inputs)
    if any(kind == "mesh" for kind, _ in changed):
        return wanted, True
    touched = dependents(ctx, changed) if changed else set()
    if changed:
        widened = _with_parents(changed)
        touched.update(
            key[:2] for key, info in stored.items() if not info.requires.isdisjoint(widened)
        )
    targets = {
        key for key in wanted if key[:2] in touched or key not in stored or not stored[key].compiled
    }
    return targets, False


def compile_variants(
    ctx: MeshContext, keys: Iterable[Key]
) -> tuple[dict[Key, tuple[Snapshot, frozenset[str]]], list[Key]]:
    """Compile each variant against one context (so shared resources are built once).
    A snapshot failing its consistency check is a compiler bug: it is logged and the
    proxy keeps its last good configuration."""
    out: dict[Key, tuple[Snapshot, frozenset[str]]] = {}
    failed: list[Key] = []
    # Compiling allocates many small, long-lived messages; with the collector running, its
    # passes over an ever larger heap cost about a third of the compile (bench/compile.py).
    # Nothing compiled here forms cycles that must be freed before the compile ends.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _compile_each(ctx, sorted(keys), out, failed)
    finally:
        if was_enabled:
            gc.enable()
    return out, failed


def proxy_request(key: Key) -> ProxyRequest:
    """The compiler's request for a stored variant: declared ports replace the defaults
    (0 keeps the default: the node's listener port, ingress 15000, egress 15001)."""
    kind, name, consumer, interception, *ports = key
    declared = {}
    if interception == "explicit":
        fields = ("app_port", "ingress_port", "egress_port")
        declared = {field: port for field, port in zip(fields, ports, strict=True) if port}
    return ProxyRequest(kind, name, consumer, interception, **declared)


def _compile_each(
    ctx: MeshContext,
    keys: list[Key],
    out: dict[Key, tuple[Snapshot, frozenset[str]]],
    failed: list[Key],
) -> None:
    # A version is a hash of every resource: one consistency check per distinct version
    # (1,000 clients of one backend often share a single one).
    checked: set[str] = set()
    for key in keys:
        kind, name = key[:2]
        try:
            snapshot = compile_proxy(ctx, proxy_request(key))
            if snapshot.version not in checked:
                snapshot.check()
                checked.add(snapshot.version)
        except (InconsistentSnapshot, ValueError):
            log.exception(
                "mesh %s: compiling %s failed; its last configuration stays", ctx.mesh_name, key
            )
            failed.append(key)
            continue
        out[key] = (snapshot, dep_keys(requires(ctx, (kind, name))))


def run_compile(mesh_id: int, full: bool = False) -> CompileResult:
    """Compile what changed in a mesh since its last compile, store it, publish it."""
    from meshapi.models import Mesh
    from meshapi.services import proxies as store

    started = time.perf_counter()
    result = CompileResult(mesh_id)
    groups: list[publish.Group] = []
    grown: list[int] = []
    with transaction.atomic():
        state = store.lock_compile_state(mesh_id)
        if state is None:
            result.skipped = "gone"
            return result
        head = Mesh.objects.filter(pk=mesh_id).values_list("revision", flat=True).first()
        up_to_date = not full and head is not None and state.revision >= head
        if up_to_date and not store.has_uncompiled_variants(mesh_id):
            result.revision, result.skipped = state.revision, "up to date"
            return result
        loaded = loader.load(mesh_id)
        if loaded is None:
            result.skipped = "gone"
            return result
        result.revision = loaded.revision
        configs = store.stored_variants(mesh_id)
        now = timezone.now()
        # Dropped before choosing: a variant a proxy renewed meanwhile is not dropped, and
        # is then compiled like any other if the change reaches it.
        dropped = drop_unused(mesh_id, loaded.ctx, configs, now)
        kept = {key: row for key, row in configs.items() if key not in dropped}
        stored = {
            key: Stored(row.requires, row.current_id is not None) for key, row in kept.items()
        }
        targets, result.full = select_targets(
            loaded.ctx, loaded.fingerprint, None if full else state.inputs, stored
        )
        result.full = result.full or full
        snapshots, result.failed = compile_variants(loaded.ctx, targets)
        result.compiled = sorted(snapshots)
        wanted = wanted_variants(loaded.ctx, kept)
        gone = [key for key in configs if key not in wanted]
        result.changed, groups, grown = store.store(loaded, snapshots, configs, gone, now)
        result.removed = gone
        result.seconds = time.perf_counter() - started
        store.record_compiled(state, loaded, result)
    # After commit: a replica told of a version must be able to read it.
    publish.publish(groups)
    # Bounding history is nothing a replica waits for: after the publish, in a transaction
    # of its own. Should it fail, the next compile of these variants trims what it left.
    try:
        store.trim_history(grown)
    except Error:  # DatabaseError, or InterfaceError: a connection gone meanwhile
        log.warning("mesh %s: trimming history failed", mesh_id, exc_info=True)
    log.info("compile_mesh %s", result.summary())
    return result
