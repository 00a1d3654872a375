"""Create, read, update and delete App Mesh resources for one tenant.

Both API surfaces call these functions; neither writes to the ORM directly. Every write
is one transaction: the row, the mesh revision bump, the audit event and the idempotency
record commit together or not at all.
"""

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Model, QuerySet
from django.utils import timezone

from meshapi.appmesh.errors import (
    BadRequest,
    Conflict,
    LimitExceeded,
    NotFound,
    ResourceInUse,
    TooManyTags,
)
from meshapi.models import GatewayRoute, IdempotencyRecord, Mesh, VirtualService
from meshapi.services import arns, checks
from meshapi.services.kinds import (
    GATEWAY_ROUTE,
    MESH,
    VIRTUAL_GATEWAY,
    VIRTUAL_NODE,
    VIRTUAL_ROUTER,
    VIRTUAL_SERVICE,
    Kind,
)
from meshapi.signals import mesh_changed
from tenants.models import AuditEvent, Tenant, quotas_for

DEFAULT_PAGE = 100
# How long a clientToken is remembered; workers prune older records.
IDEMPOTENCY_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Writer:
    """Who is writing, for the audit log."""

    actor: str
    request_id: str = ""


@dataclass(frozen=True)
class Idempotency:
    operation: str
    client_token: str
    digest: str


# ---------------------------------------------------------------- scoping


def scoped(kind: Kind, tenant: Tenant) -> QuerySet:
    """The one place App Mesh lookups are narrowed to a tenant."""
    return kind.model.objects.filter(tenant=tenant)


# Every write in a mesh holds the mesh row's lock until it commits, so writes to one mesh
# queue one behind another: reference checks cannot be raced by a delete, revision bumps
# follow each other, and there is no lock cycle to deadlock on. Locks are FOR NO KEY UPDATE,
# which leaves foreign-key checks (FOR KEY SHARE) by rows that reference a locked row free:
# a route inserted under a router never waits for a writer that holds that router.


def _lock_mesh(tenant: Tenant, mesh_name: str) -> Mesh:
    mesh = scoped(MESH, tenant).select_for_update(no_key=True).filter(name=mesh_name).first()
    if mesh is None:
        raise NotFound(f"Mesh '{mesh_name}' not found.")
    return mesh


def _get(
    tenant: Tenant, kind: Kind, mesh_name: str, name: str, parent_name: str = "", lock=False
) -> Model:
    qs = scoped(kind, tenant)
    if kind is MESH:
        qs = qs.filter(name=mesh_name)
    else:
        qs = qs.select_related("mesh").filter(mesh__name=mesh_name, name=name)
        if kind.parent is not None:
            qs = qs.select_related(kind.parent_field).filter(
                **{f"{kind.parent_field}__name": parent_name}
            )
    if lock:
        # A resource and its mesh are locked by one statement (see _lock_mesh).
        of = ("self",) if kind is MESH else ("self", "mesh")
        qs = qs.select_for_update(no_key=True, of=of)
    elif kind is not MESH:
        # A read shows only the names of the mesh and parent: don't decode their JSON.
        deferred = ["mesh__spec", "mesh__tags"]
        if kind.parent is not None:
            deferred += [f"{kind.parent_field}__spec", f"{kind.parent_field}__tags"]
        qs = qs.defer(*deferred)
    row = qs.first()
    if row is None:
        _raise_not_found(tenant, kind, mesh_name, name, parent_name)
    return row


def _raise_not_found(tenant: Tenant, kind: Kind, mesh_name: str, name: str, parent_name: str):
    if kind is not MESH and not scoped(MESH, tenant).filter(name=mesh_name).exists():
        raise NotFound(f"Mesh '{mesh_name}' not found.")
    if kind.parent is not None:
        parent = scoped(kind.parent, tenant).filter(mesh__name=mesh_name, name=parent_name)
        if not parent.exists():
            raise NotFound(
                f"{kind.parent.label.capitalize()} '{parent_name}' not found in mesh '{mesh_name}'."
            )
    if kind is MESH:
        raise NotFound(f"Mesh '{mesh_name}' not found.")
    raise NotFound(f"{kind.label.capitalize()} '{name}' not found in mesh '{mesh_name}'.")


# ---------------------------------------------------------------- rendering


def _epoch(value) -> float:
    return round(value.timestamp(), 3)


def _last_updated(row: Model) -> float:
    # auto_now and auto_now_add read the clock apart, a few microseconds from each other;
    # App Mesh reports a resource never updated (version 1) as last updated when created.
    return _epoch(row.updated_at if row.version > 1 else row.created_at)


def resource_path(kind: Kind, row: Model) -> arns.ResourcePath:
    if kind is MESH:
        return arns.ResourcePath(MESH, row.name, row.name)
    parent_name = getattr(row, kind.parent_field).name if kind.parent else ""
    return arns.ResourcePath(kind, row.mesh.name, row.name, parent_name)


def arn_of(tenant: Tenant, kind: Kind, row: Model) -> str:
    return arns.build(tenant.default_region, tenant.account_id, resource_path(kind, row))


def _names(kind: Kind, row: Model) -> dict[str, str]:
    path = resource_path(kind, row)
    out = {"meshName": path.mesh_name}
    if kind is not MESH:
        out[kind.name_field] = row.name
        if kind.parent is not None:
            out[kind.parent.name_field] = path.parent_name
    return out


def render(tenant: Tenant, kind: Kind, row: Model) -> dict[str, Any]:
    """The resource as App Mesh's *Data shapes describe it."""
    data = _names(kind, row)
    data["metadata"] = {
        "arn": arn_of(tenant, kind, row),
        "createdAt": _epoch(row.created_at),
        "lastUpdatedAt": _last_updated(row),
        "meshOwner": tenant.account_id,
        "resourceOwner": tenant.account_id,
        "uid": str(row.uid),
        "version": row.version,
    }
    data["spec"] = row.spec
    data["status"] = {"status": row.status}
    return data


def render_ref(tenant: Tenant, kind: Kind, row: Model) -> dict[str, Any]:
    """The resource as App Mesh's *Ref shapes (list items) describe it."""
    ref = _names(kind, row)
    ref.update(
        arn=arn_of(tenant, kind, row),
        createdAt=_epoch(row.created_at),
        lastUpdatedAt=_last_updated(row),
        meshOwner=tenant.account_id,
        resourceOwner=tenant.account_id,
        version=row.version,
    )
    return ref


# ---------------------------------------------------------------- reads


def describe(tenant: Tenant, kind: Kind, mesh_name: str, name: str, parent_name: str = "") -> dict:
    return render(tenant, kind, _get(tenant, kind, mesh_name, name, parent_name))


class RawJSON(str):
    """A response body already serialized; the wire layer sends it as it is."""


_READ_COLUMNS = "r.name, r.uid, r.spec, r.version, r.status, r.created_at, r.updated_at"


@lru_cache(maxsize=16)
def _describe_sql(kind: Kind) -> str:
    """One hand-written SELECT per kind: the hottest read skips the ORM's query building."""
    table = kind.model._meta.db_table
    if kind is MESH:
        return f"SELECT {_READ_COLUMNS} FROM {table} r WHERE r.tenant_id = %s AND r.name = %s"
    mesh_table = MESH.model._meta.db_table
    sql = f"SELECT {_READ_COLUMNS} FROM {table} r JOIN {mesh_table} m ON m.id = r.mesh_id"
    where = " WHERE r.tenant_id = %s AND m.name = %s AND r.name = %s"
    if kind.parent is not None:
        parent_table = kind.parent.model._meta.db_table
        column = kind.model._meta.get_field(kind.parent_field).column
        sql += f" JOIN {parent_table} p ON p.id = r.{column}"
        where += " AND p.name = %s"
    return sql + where


def _aware(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def describe_json(
    tenant: Tenant, kind: Kind, mesh_name: str, name: str, parent_name: str = ""
) -> RawJSON:
    """`describe` serialized, with the stored spec spliced in without decoding it."""
    params: list[Any] = [tenant.pk, mesh_name]
    if kind is not MESH:
        params.append(name)
        if kind.parent is not None:
            params.append(parent_name)
    with connection.cursor() as cursor:
        cursor.execute(_describe_sql(kind), params)
        row = cursor.fetchone()
    if row is None:
        _raise_not_found(tenant, kind, mesh_name, name, parent_name)
    row_name, uid, spec, version, status, created_at, updated_at = row
    created = _epoch(_aware(created_at))
    path = arns.ResourcePath(kind, mesh_name, row_name, parent_name)
    data = {"meshName": mesh_name}
    if kind is not MESH:
        data[kind.name_field] = row_name
        if kind.parent is not None:
            data[kind.parent.name_field] = parent_name
    data["metadata"] = {
        "arn": arns.build(tenant.default_region, tenant.account_id, path),
        "createdAt": created,
        "lastUpdatedAt": _epoch(_aware(updated_at)) if version > 1 else created,
        "meshOwner": tenant.account_id,
        "resourceOwner": tenant.account_id,
        "uid": str(uuid.UUID(str(uid))),
        "version": version,
    }
    data["status"] = {"status": status}
    if not isinstance(spec, str):  # a backend that decodes JSON columns itself
        spec = json.dumps(spec, separators=(",", ":"))
    head = json.dumps(data, separators=(",", ":"))
    return RawJSON(head[:-1] + ',"spec":' + spec + "}")


def _decode_token(token: str | None) -> str | None:
    if not token:
        return None
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise BadRequest("nextToken: not a token this API returned.") from exc
    if not isinstance(after, str) or "\x00" in after:
        raise BadRequest("nextToken: not a token this API returned.")
    return after


def _encode_token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


def list_refs(
    tenant: Tenant,
    kind: Kind,
    mesh_name: str = "",
    parent_name: str = "",
    limit: int | None = None,
    next_token: str | None = None,
) -> tuple[list[dict], str | None]:
    """One page of refs, ordered by name, and the token for the next page (or None)."""
    size = limit or DEFAULT_PAGE
    after = _decode_token(next_token)
    # A ref shows names, times and version: load nothing else (specs are the bulk of a row).
    fields = ["name", "created_at", "updated_at", "version"]
    qs = scoped(kind, tenant).order_by("name")
    if kind is not MESH:
        qs = qs.select_related("mesh").filter(mesh__name=mesh_name)
        fields.append("mesh__name")
        if kind.parent is not None:
            qs = qs.select_related(kind.parent_field).filter(
                **{f"{kind.parent_field}__name": parent_name}
            )
            fields.append(f"{kind.parent_field}__name")
    qs = qs.only(*fields)
    if after is not None:
        qs = qs.filter(name__gt=after)
    rows = list(qs[: size + 1])
    if not rows and kind is not MESH and after is None:
        # An empty page is either "none yet" or "no such mesh/parent": tell them apart.
        _raise_not_found_parent(tenant, kind, mesh_name, parent_name)
    more = len(rows) > size
    rows = rows[:size]
    token = _encode_token(rows[-1].name) if more else None
    return [render_ref(tenant, kind, r) for r in rows], token


def _raise_not_found_parent(tenant: Tenant, kind: Kind, mesh_name: str, parent_name: str):
    if not scoped(MESH, tenant).filter(name=mesh_name).exists():
        raise NotFound(f"Mesh '{mesh_name}' not found.")
    if kind.parent is not None:
        parent = scoped(kind.parent, tenant).filter(mesh__name=mesh_name, name=parent_name)
        if not parent.exists():
            raise NotFound(
                f"{kind.parent.label.capitalize()} '{parent_name}' not found in mesh '{mesh_name}'."
            )


# ---------------------------------------------------------------- writes


def _replay(tenant: Tenant, idem: Idempotency | None) -> dict | None:
    if idem is None or not idem.client_token:
        return None
    record = IdempotencyRecord.objects.filter(
        tenant=tenant, operation=idem.operation, client_token=idem.client_token
    ).first()
    if record is None:
        return None
    if record.created_at < timezone.now() - IDEMPOTENCY_WINDOW:
        # Forgotten: the token may be used afresh, so its old record (not yet pruned) goes.
        IdempotencyRecord.objects.filter(pk=record.pk).delete()
        return None
    if record.request_digest != idem.digest:
        raise Conflict(
            "clientToken: this token was already used for a request with different "
            "parameters; retry with a new client token."
        )
    return record.response


def _remember(tenant: Tenant, idem: Idempotency | None, response: dict) -> None:
    if idem is None or not idem.client_token:
        return
    IdempotencyRecord.objects.create(
        tenant=tenant,
        operation=idem.operation,
        client_token=idem.client_token,
        request_digest=idem.digest,
        response=response,
    )


def _audit(tenant, writer, action, kind, arn, before, after) -> None:
    AuditEvent.objects.create(
        tenant=tenant,
        actor=writer.actor,
        action=action,
        resource_type=kind.key,
        resource_arn=arn,
        before=before,
        after=after,
        request_id=writer.request_id,
    )


def _bump(mesh: Mesh) -> None:
    Mesh.objects.filter(pk=mesh.pk).update(revision=F("revision") + 1)
    mesh_id = mesh.pk

    def notify() -> None:
        revision = Mesh.objects.filter(pk=mesh_id).values_list("revision", flat=True).first()
        if revision is not None:
            mesh_changed.send(sender=Mesh, mesh_id=mesh_id, revision=revision)

    transaction.on_commit(notify)


def _check_tags(tenant: Tenant, tags: dict, quotas: dict[str, int] | None = None) -> None:
    limit = (quotas or quotas_for(tenant))["tags_per_resource"]
    if len(tags) > limit:
        raise TooManyTags(f"tags: a resource can have at most {limit} tags.")


def tags_to_dict(tags: list[dict] | None) -> dict[str, str]:
    return {t["key"]: t["value"] for t in tags or []}


def _normalise_spec(kind: Kind, spec: dict | None) -> dict:
    spec = dict(spec or {})
    if kind is MESH:
        spec.setdefault("egressFilter", {"type": "DROP_ALL"})
    return spec


def _denormalise(kind: Kind, row: Model) -> None:
    if kind is VIRTUAL_SERVICE:
        provider = row.spec.get("provider") or {}
        row.provider_kind, row.provider_name = "", ""
        for key in ("virtualNode", "virtualRouter"):
            if key in provider:
                row.provider_kind = key
                row.provider_name = provider[key][f"{key}Name"]
    elif kind is GATEWAY_ROUTE:
        row.target_service = checks.gateway_route_target(row.spec) or ""


def create(
    tenant: Tenant,
    kind: Kind,
    writer: Writer,
    *,
    mesh_name: str,
    name: str,
    spec: dict | None,
    tags: list[dict] | None = None,
    parent_name: str = "",
    idem: Idempotency | None = None,
) -> dict:
    tag_map = tags_to_dict(tags)
    spec = _normalise_spec(kind, spec)
    try:
        with transaction.atomic():
            # Lock first, then look for an earlier answer: a retry racing its original waits
            # here and replays it instead of failing on the name the original just took.
            if kind is MESH:
                Tenant.objects.select_for_update(no_key=True).filter(pk=tenant.pk).first()
            else:
                mesh = _lock_mesh(tenant, mesh_name)
            replayed = _replay(tenant, idem)
            if replayed is not None:
                return replayed
            quotas = quotas_for(tenant)
            _check_tags(tenant, tag_map, quotas)
            if kind is MESH:
                _check_quota(scoped(MESH, tenant), quotas, kind, "this account")
                row = Mesh(tenant=tenant, name=mesh_name, spec=spec, tags=tag_map)
                _save_new(row, kind, mesh_name)
            else:
                fields = {"tenant": tenant, "mesh": mesh, "name": name, "spec": spec}
                siblings = scoped(kind, tenant).filter(mesh=mesh)
                where = f"mesh '{mesh_name}'"
                if kind.parent is not None:
                    parent = scoped(kind.parent, tenant).filter(mesh=mesh, name=parent_name).first()
                    if parent is None:
                        raise NotFound(
                            f"{kind.parent.label.capitalize()} '{parent_name}' not found in "
                            f"mesh '{mesh_name}'."
                        )
                    fields[kind.parent_field] = parent
                    siblings = siblings.filter(**{kind.parent_field: parent})
                    where = f"{kind.parent.label} '{parent_name}'"
                _check_quota(siblings, quotas, kind, where)
                checks.check_spec(kind, mesh, spec, quotas)
                row = kind.model(tags=tag_map, **fields)
                _denormalise(kind, row)
                _save_new(row, kind, mesh_name)
                _bump(mesh)
            data = render(tenant, kind, row)
            _audit(tenant, writer, f"Create{kind.op}", kind, data["metadata"]["arn"], None, data)
            _remember(tenant, idem, data)
            if kind is MESH:
                _bump(row)
            return data
    except IntegrityError:
        # A concurrent request with the same client token won the race: answer as it did.
        replayed = _replay(tenant, idem)
        if replayed is not None:
            return replayed
        raise


def _save_new(row: Model, kind: Kind, mesh_name: str) -> None:
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError as exc:
        where = "" if kind is MESH else f" in mesh '{mesh_name}'"
        raise Conflict(
            f"{kind.name_field}: a {kind.label} named '{row.name}' already exists{where}."
        ) from exc


def _check_quota(siblings: QuerySet, quotas: dict[str, int], kind: Kind, where: str) -> None:
    limit = quotas[kind.quota]
    if siblings.count() >= limit:
        raise LimitExceeded(
            f"{kind.name_field}: {where} already has {limit} {kind.plural_label}, the most allowed "
            f"(quota '{kind.quota}'); delete one or ask for a higher quota."
        )


def update(
    tenant: Tenant,
    kind: Kind,
    writer: Writer,
    *,
    mesh_name: str,
    name: str,
    spec: dict | None,
    parent_name: str = "",
    idem: Idempotency | None = None,
) -> dict:
    spec = _normalise_spec(kind, spec)
    try:
        with transaction.atomic():
            row = _get(tenant, kind, mesh_name, name, parent_name, lock=True)
            # After the lock: a retry racing its original replays it instead of applying twice.
            replayed = _replay(tenant, idem)
            if replayed is not None:
                return replayed
            before = render(tenant, kind, row)
            if kind is not MESH:
                checks.check_spec(kind, row.mesh, spec, quotas_for(tenant))
            row.spec = spec
            row.version = row.version + 1
            _denormalise(kind, row)
            row.save()
            _bump(row if kind is MESH else row.mesh)
            data = render(tenant, kind, row)
            _audit(tenant, writer, f"Update{kind.op}", kind, data["metadata"]["arn"], before, data)
            _remember(tenant, idem, data)
            return data
    except IntegrityError:
        # The same token, used at the same moment on another resource, won the race.
        replayed = _replay(tenant, idem)
        if replayed is not None:
            return replayed
        raise


def delete(
    tenant: Tenant, kind: Kind, writer: Writer, *, mesh_name: str, name: str, parent_name: str = ""
) -> dict:
    with transaction.atomic():
        row = _get(tenant, kind, mesh_name, name, parent_name, lock=True)
        _guard_delete(kind, row)
        data = render(tenant, kind, row)
        data["status"] = {"status": "DELETED"}
        mesh = None if kind is MESH else row.mesh
        row.delete()
        if mesh is not None:
            _bump(mesh)
        _audit(tenant, writer, f"Delete{kind.op}", kind, data["metadata"]["arn"], data, None)
        return data


def _guard_delete(kind: Kind, row: Model) -> None:
    def in_use(message: str) -> None:
        raise ResourceInUse(message)

    if kind is MESH:
        held = [
            k.plural_label
            for k in (VIRTUAL_NODE, VIRTUAL_SERVICE, VIRTUAL_ROUTER, VIRTUAL_GATEWAY)
            if k.model.objects.filter(mesh=row).exists()
        ]
        if held:
            in_use(f"Mesh '{row.name}' still has {', '.join(held)}; delete them first.")
    elif kind is VIRTUAL_ROUTER:
        if row.routes.exists():
            in_use(f"Virtual router '{row.name}' still has routes; delete them first.")
        _guard_provider(row, "virtualRouter", in_use)
    elif kind is VIRTUAL_NODE:
        _guard_provider(row, "virtualNode", in_use)
    elif kind is VIRTUAL_GATEWAY:
        if row.gateway_routes.exists():
            in_use(f"Virtual gateway '{row.name}' still has gateway routes; delete them first.")
    elif kind is VIRTUAL_SERVICE:
        route = GatewayRoute.objects.filter(mesh=row.mesh, target_service=row.name).first()
        if route is not None:
            in_use(
                f"Virtual service '{row.name}' is the target of gateway route '{route.name}'; "
                "change or delete that gateway route first."
            )


def _guard_provider(row: Model, provider_kind: str, in_use) -> None:
    service = VirtualService.objects.filter(
        mesh=row.mesh, provider_kind=provider_kind, provider_name=row.name
    ).first()
    if service is not None:
        label = "Virtual node" if provider_kind == "virtualNode" else "Virtual router"
        in_use(
            f"{label} '{row.name}' is the provider of virtual service '{service.name}'; "
            "change or delete that virtual service first."
        )


# ---------------------------------------------------------------- tags


def _by_arn(tenant: Tenant, arn: str, lock: bool = False) -> tuple[Kind, Model]:
    region, account, path = arns.parse(arn)
    if account != tenant.account_id or region != tenant.default_region:
        raise NotFound(f"resourceArn: no resource with ARN '{arn}'.")
    row = _get(tenant, path.kind, path.mesh_name, path.name, path.parent_name, lock=lock)
    return path.kind, row


def list_tags(
    tenant: Tenant, arn: str, limit: int | None = None, next_token: str | None = None
) -> tuple[list[dict], str | None]:
    _, row = _by_arn(tenant, arn)
    keys = sorted(row.tags)
    after = _decode_token(next_token)
    if after is not None:
        keys = [k for k in keys if k > after]
    size = limit or DEFAULT_PAGE
    page, more = keys[:size], len(keys) > size
    return [{"key": k, "value": row.tags[k]} for k in page], (
        _encode_token(page[-1]) if more else None
    )


def tag(tenant: Tenant, writer: Writer, arn: str, tags: list[dict]) -> None:
    with transaction.atomic():
        kind, row = _by_arn(tenant, arn, lock=True)
        before = dict(row.tags)
        merged = {**row.tags, **tags_to_dict(tags)}
        _check_tags(tenant, merged)
        row.tags = merged
        row.save(update_fields=["tags"])
        _bump(row if kind is MESH else row.mesh)
        _audit(tenant, writer, "TagResource", kind, arn, {"tags": before}, {"tags": merged})


def untag(tenant: Tenant, writer: Writer, arn: str, keys: list[str]) -> None:
    with transaction.atomic():
        kind, row = _by_arn(tenant, arn, lock=True)
        before = dict(row.tags)
        row.tags = {k: v for k, v in row.tags.items() if k not in set(keys)}
        row.save(update_fields=["tags"])
        _bump(row if kind is MESH else row.mesh)
        _audit(tenant, writer, "UntagResource", kind, arn, {"tags": before}, {"tags": row.tags})
