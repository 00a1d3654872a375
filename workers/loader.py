"""ORM → compiler inputs: the only place the compiler's inputs touch the database.

`load(mesh_id)` reads one mesh in four queries whatever its size (the mesh, its CAs, every
spec in one statement, the endpoints; values only, no model instances; specs as JSON text,
parsed, frozen and hashed once per distinct text in this process) and returns the
`MeshContext` with a fingerprint: a content hash per input (`"<kind> <name>"` → hash) in
the compiler's dependency names (workers/compiler/deps.py), so two loads can be diffed
into the set of changes that `dependents` takes.
"""

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from workers.compiler import Endpoint, MeshContext
from workers.compiler.frozen import FrozenDict, freeze

# When one address is known from several sources, the first of these wins: what an
# operator typed beats what a proxy announced beats what discovery found.
SOURCE_PRECEDENCE = ("static", "registered", "cloudmap", "ecs", "ec2")


@dataclass(frozen=True)
class LoadedMesh:
    mesh_id: int
    tenant_id: int
    account_id: str
    name: str
    uid: str
    revision: int  # read before the resources: the content is at least this revision
    ctx: MeshContext
    fingerprint: dict[str, str]


def _digest(value: Any) -> str:
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(data.encode(), digest_size=16).hexdigest()


class LoadedSpec(FrozenDict):
    """A spec as the loader read it: frozen, with its content hashes computed once (and
    its backends' apart, as `fingerprint` wants them)."""

    __slots__ = ("digest", "backends_digest")

    def __init__(self, value: Mapping) -> None:
        super().__init__({k: freeze(v) for k, v in value.items()})
        self.digest = _digest(value)
        self.backends_digest = _digest(value.get("backends") or [])


# Spec JSON text → LoadedSpec, shared by every load in this process: a compile reads the
# whole mesh, but between two compiles few specs change, and an unchanged spec's text is
# the same (PostgreSQL's jsonb prints one canonical form), so parsing, freezing and hashing
# it again would only repeat work. Bounded; cleared when full.
_SPECS: dict[str, LoadedSpec] = {}
SPEC_CACHE_SIZE = 100_000


def _spec(text: Any) -> LoadedSpec | Any:
    """A spec column's value as a LoadedSpec (anything but a JSON object is returned as is)."""
    if not isinstance(text, str):
        return LoadedSpec(text) if isinstance(text, Mapping) else text
    found = _SPECS.get(text)
    if found is None:
        value = json.loads(text)
        if not isinstance(value, Mapping):
            return value
        if len(_SPECS) >= SPEC_CACHE_SIZE:
            _SPECS.clear()
        found = _SPECS[text] = LoadedSpec(value)
    return found


def _spec_digest(spec: Any) -> str:
    return spec.digest if isinstance(spec, LoadedSpec) else _digest(spec)


def _backends_digest(spec: Any) -> str:
    if isinstance(spec, LoadedSpec):
        return spec.backends_digest
    return _digest((spec or {}).get("backends") or [])


def fingerprint(
    mesh_name: str,
    mesh_spec: Mapping | None = None,
    *,
    virtual_nodes: Mapping[str, Mapping] | None = None,
    virtual_services: Mapping[str, Mapping] | None = None,
    virtual_routers: Mapping[str, Mapping] | None = None,
    routes: Mapping[str, Mapping[str, Mapping]] | None = None,
    virtual_gateways: Mapping[str, Mapping] | None = None,
    gateway_routes: Mapping[str, Mapping[str, Mapping]] | None = None,
    endpoints: Mapping[tuple[str, int], Iterable[Endpoint | Mapping]] | None = None,
    trust_bundle: str = "",
    mtls_mode: str = "DISABLED",
    trust_domain: str = "",
) -> dict[str, str]:
    """A content hash per compiler input, keyed `"<kind> <name>"` with the kinds and names
    of `workers.compiler.dependents` (routes `<router>/<route>`, endpoints per node).
    Takes the same arguments as `MeshContext.from_specs`. The mTLS policy is part of the
    mesh's hash (a change recompiles every proxy); while it is DISABLED the hash is what
    it was before the policy existed, and the trust domain (unused then) is left out."""
    mesh_inputs: list[Any] = [mesh_spec or {}, trust_bundle]
    if mtls_mode != "DISABLED":
        mesh_inputs.append({"mtls": mtls_mode, "trustDomain": trust_domain})
    out = {f"mesh {mesh_name}": _digest(mesh_inputs)}
    for kind, items in (
        ("virtualNode", virtual_nodes),
        ("virtualService", virtual_services),
        ("virtualRouter", virtual_routers),
        ("virtualGateway", virtual_gateways),
    ):
        for name, spec in (items or {}).items():
            out[f"{kind} {name}"] = _spec_digest(spec)
    # A node's backends apart from the rest of its spec: under automatic mTLS they make it
    # a caller of other nodes (workers/compiler/authz.py), which depend on them alone.
    for name, spec in (virtual_nodes or {}).items():
        out[f"backends {name}"] = _backends_digest(spec)
    for kind, parents in (("route", routes), ("gatewayRoute", gateway_routes)):
        for parent, children in (parents or {}).items():
            for name, spec in children.items():
                out[f"{kind} {parent}/{name}"] = _spec_digest(spec)
    per_node: dict[str, list] = {}
    for (node, port), items in (endpoints or {}).items():
        for e in items:
            e = e if isinstance(e, Endpoint) else Endpoint(**e)
            per_node.setdefault(node, []).append([int(port), e.address, e.port, e.source, e.health])
    for node, rows in per_node.items():
        out[f"endpoints {node}"] = _digest(sorted(rows))
    return out


def changes(previous: Mapping[str, str], current: Mapping[str, str]) -> set[tuple[str, str]]:
    """The (kind, name) inputs added, removed or changed between two fingerprints."""
    keys = {k for k in previous.keys() | current.keys() if previous.get(k) != current.get(k)}
    return {tuple(k.split(" ", 1)) for k in keys}  # type: ignore[misc]


def load(mesh_id: int) -> LoadedMesh | None:
    """The mesh as the compiler sees it, or None if it no longer exists (4 queries)."""
    from meshapi.models import Endpoint as EndpointRow
    from meshapi.models import Mesh

    # The revision first: what is read after it is at least that revision, so recording
    # it as compiled never claims a write the compile did not see.
    mesh = (
        Mesh.objects.filter(pk=mesh_id)
        .values("name", "uid", "spec", "revision", "mtls_mode", "tenant_id", "tenant__account_id")
        .first()
    )
    if mesh is None:
        return None

    from tenants.identity.services import mesh_trust_bundle, trust_domain
    from tenants.models import Tenant

    inputs: dict[str, Any] = {
        "trust_bundle": mesh_trust_bundle(mesh_id),  # CA rotation → new SDS secret
        "mtls_mode": mesh["mtls_mode"],
        # The trust domain needs only the account id: an unsaved Tenant, no query.
        "trust_domain": trust_domain(Tenant(account_id=mesh["tenant__account_id"])),
        **_specs(mesh_id),
        "endpoints": _endpoints(
            EndpointRow.objects.filter(mesh_id=mesh_id).values_list(
                "virtual_node__name", "port", "address", "target_port", "source", "health"
            )
        ),
    }
    ctx = MeshContext.from_specs(mesh["name"], mesh["spec"], **inputs)
    return LoadedMesh(
        mesh_id=mesh_id,
        tenant_id=mesh["tenant_id"],
        account_id=mesh["tenant__account_id"],
        name=mesh["name"],
        uid=str(mesh["uid"]),
        revision=mesh["revision"],
        ctx=ctx,
        fingerprint=fingerprint(mesh["name"], mesh["spec"], **inputs),
    )


# The `from_specs` argument each kind of spec row goes to, and for routes their parent's.
_SPEC_TABLES = (
    ("virtual_nodes", "VirtualNode", ""),
    ("virtual_services", "VirtualService", ""),
    ("virtual_routers", "VirtualRouter", ""),
    ("virtual_gateways", "VirtualGateway", ""),
    ("routes", "Route", "virtual_router"),
    ("gateway_routes", "GatewayRoute", "virtual_gateway"),
)


@functools.cache
def _specs_sql() -> str:
    """One statement reading the specs of every kind, built once per process: six ORM
    queries cost more to build and send than the database takes to answer them."""
    from django.apps import apps
    from django.db import connection

    quote = connection.ops.quote_name
    parts = []
    for position, (_, model_name, parent) in enumerate(_SPEC_TABLES):
        model = apps.get_model("meshapi", model_name)
        table = quote(model._meta.db_table)
        if parent:
            field = model._meta.get_field(parent)
            parents = quote(field.related_model._meta.db_table)
            parts.append(
                f"SELECT {position}, p.name, c.name, CAST(c.spec AS text) FROM {table} AS c"
                f" JOIN {parents} AS p ON p.id = c.{quote(field.column)} WHERE c.mesh_id = %s"
            )
        else:
            parts.append(
                f"SELECT {position}, '', name, CAST(spec AS text) FROM {table} WHERE mesh_id = %s"
            )
    return " UNION ALL ".join(parts)


def _specs(mesh_id: int) -> dict[str, dict[str, Any]]:
    """Every spec of the mesh as `from_specs` takes them (routes keyed by their parent),
    parsed through the process's spec cache (_spec)."""
    from django.db import connection

    out: list[dict[str, Any]] = [{} for _ in _SPEC_TABLES]
    with connection.cursor() as cursor:
        cursor.execute(_specs_sql(), [mesh_id] * len(_SPEC_TABLES))
        rows = cursor.fetchall()
    for position, parent, name, spec in rows:
        if _SPEC_TABLES[position][2]:  # a route or gateway route, under its parent
            out[position].setdefault(parent, {})[name] = _spec(spec)
        else:
            out[position][name] = _spec(spec)
    return {argument: specs for (argument, _, _), specs in zip(_SPEC_TABLES, out, strict=True)}


def _endpoints(rows: Iterable[tuple]) -> dict[tuple[str, int], list[Endpoint]]:
    """(node, listener port) → its endpoints, each at its target port (an explicit-mode
    proxy's ingress port, else the listener port)."""
    rank = {source: i for i, source in enumerate(SOURCE_PRECEDENCE)}
    best: dict[tuple[str, int, str, int], tuple] = {}
    for node, port, address, target, source, health in rows:
        key = (node, port, address, target)
        if key not in best or rank.get(source, 99) < rank.get(best[key][4], 99):
            best[key] = (node, port, address, target, source, health)
    out: dict[tuple[str, int], list[Endpoint]] = {}
    for node, port, address, target, source, health in best.values():
        out.setdefault((node, port), []).append(Endpoint(address, target, source, health))
    return out
