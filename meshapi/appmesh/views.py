"""The App Mesh REST-JSON wire protocol at /v20190125/…: one entry point for 38 operations."""

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from meshapi.appmesh import model, validate
from meshapi.appmesh.errors import (
    AppMeshError,
    BadRequest,
    Forbidden,
    InternalServerError,
    NotFound,
    UnknownOperation,
)
from meshapi.services import resources
from meshapi.services.kinds import KINDS, MESH, Kind
from tenants.auth import verify_sigv4
from tenants.models import Tenant

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "application/x-amz-json-1.0", "application/x-amz-json-1.1")
WRITE_PREFIXES = ("Create", "Update", "Delete", "Tag", "Untag")
NAME_FIELDS = tuple(kind.name_field for kind in KINDS)
# As the model documents it: "Up to 36 letters, numbers, hyphens, and underscores".
CLIENT_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,36}")


def _respond(status: int, body: dict | str, request_id: str, error: str = "") -> HttpResponse:
    if not isinstance(body, resources.RawJSON):
        body = json.dumps(body, separators=(",", ":"))
    response = HttpResponse(body, status=status, content_type="application/json")
    response["Content-Length"] = str(len(response.content))
    response["x-amzn-RequestId"] = request_id
    if error:
        response["x-amzn-ErrorType"] = error
    return response


@csrf_exempt
def appmesh_entry(request: HttpRequest, rest: str = "") -> HttpResponse:
    request_id = str(uuid.uuid4())
    try:
        return _respond(200, _handle(request, request_id), request_id)
    except AppMeshError as exc:
        return _respond(exc.status, {"message": exc.message}, request_id, exc.code)
    except Exception:
        log.exception("unhandled error in App Mesh API (request %s)", request_id)
        err = InternalServerError(f"Internal error; quote request id {request_id}.")
        return _respond(err.status, {"message": err.message}, request_id, err.code)


def _handle(request: HttpRequest, request_id: str) -> dict | str:
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > settings.MESHPLANE_MAX_BODY_BYTES:
        raise BadRequest(f"Request body is larger than {settings.MESHPLANE_MAX_BODY_BYTES} bytes.")
    found = model.resolve(request.method, request.path_info)
    if found is None:
        if model.path_exists(request.path_info):
            raise BadRequest(f"Method {request.method} is not allowed on {request.path_info}.")
        raise UnknownOperation(f"No App Mesh operation at {request.method} {request.path_info}.")
    op, path_params = found
    body = request.body
    auth = verify_sigv4(request, body)
    key = auth.key
    if op.name.startswith(WRITE_PREFIXES) and not key.can_write:
        raise Forbidden(f"Access key {key.key_id} is read-only; {op.name} needs a read-write key.")
    params = _params(request, op, path_params, body)
    tenant = key.tenant
    owner = params.pop("meshOwner", None)
    if owner is not None and owner != tenant.account_id:
        raise NotFound(f"meshOwner: no mesh owned by account {owner} is shared with you.")
    writer = resources.Writer(actor=key.actor, request_id=request_id)
    return HANDLERS[op.name](tenant, writer, op.name, params)


def _params(request: HttpRequest, op: model.Operation, path_params: dict, body: bytes) -> dict:
    shape = op.model.input_shape
    params: dict[str, Any] = {}
    payload: dict[str, Any] = {}
    if body:
        ctype = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if ctype and ctype not in JSON_TYPES:
            raise BadRequest(f"Content-Type '{ctype}' is not supported; send application/json.")
        try:
            # AWS services read a JSON null as an absent member; so do we, and never store one.
            payload = _without_nulls(json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"Request body is not valid JSON: {exc}.") from exc
        except RecursionError as exc:
            raise BadRequest("Request body is nested too deeply for an App Mesh request.") from exc
        if not isinstance(payload, dict):
            raise BadRequest("Request body must be a JSON object.")
    for name, member in shape.members.items():
        where = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if where == "uri":
            params[name] = path_params[wire]
        elif where == "querystring":
            value = request.GET.get(wire)
            if value is None:
                continue
            if member.type_name in ("integer", "long"):
                try:
                    value = int(value)
                except ValueError as exc:
                    raise BadRequest(f"{name}: '{value}' is not an integer.") from exc
            params[name] = value
    for key, value in payload.items():
        member = shape.members.get(key)
        if member is None or member.serialization.get("location"):
            raise BadRequest(f"{key}: unknown field.")
        params[key] = value
    validate.validate(shape, params)
    _check_names(params)
    token = params.get("clientToken")
    if token is not None and not CLIENT_TOKEN.fullmatch(token):
        raise BadRequest(
            "clientToken: use up to 36 letters, numbers, hyphens and underscores (a UUID fits)."
        )
    return params


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _check_names(params: dict) -> None:
    """A resource name is a segment of its URL path and ARN, so it must stay one segment."""
    for field in NAME_FIELDS:
        value = params.get(field)
        if value is None:
            continue
        if value in ("", ".", "..") or "/" in value:
            raise BadRequest(
                f"{field}: '{value}' cannot name a resource; a name is part of the resource's "
                "path and ARN, so it may not be empty, '.' or '..', or contain '/'."
            )


def _digest(operation: str, params: dict) -> str:
    material = {k: v for k, v in params.items() if k != "clientToken"}
    raw = json.dumps([operation, material], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def _idem(operation: str, params: dict) -> resources.Idempotency | None:
    token = params.get("clientToken")
    if not token:
        return None
    return resources.Idempotency(operation, token, _digest(operation, params))


def _names(kind: Kind, params: dict) -> dict[str, str]:
    out = {"mesh_name": params["meshName"]}
    out["name"] = params["meshName"] if kind is MESH else params[kind.name_field]
    if kind.parent is not None:
        out["parent_name"] = params[kind.parent.name_field]
    return out


Handler = Callable[[Tenant, resources.Writer, str, dict], dict | str]


def _handlers_for(kind: Kind) -> dict[str, Handler]:
    def create(tenant, writer, op, params):
        return resources.create(
            tenant,
            kind,
            writer,
            spec=params.get("spec"),
            tags=params.get("tags"),
            idem=_idem(op, params),
            **_names(kind, params),
        )

    def update(tenant, writer, op, params):
        return resources.update(
            tenant,
            kind,
            writer,
            spec=params.get("spec"),
            idem=_idem(op, params),
            **_names(kind, params),
        )

    def describe(tenant, writer, op, params):
        return resources.describe_json(tenant, kind, **_names(kind, params))

    def delete(tenant, writer, op, params):
        return resources.delete(tenant, kind, writer, **_names(kind, params))

    def list_(tenant, writer, op, params):
        names = {"mesh_name": params.get("meshName", "")}
        if kind.parent is not None:
            names["parent_name"] = params[kind.parent.name_field]
        refs, token = resources.list_refs(
            tenant, kind, limit=params.get("limit"), next_token=params.get("nextToken"), **names
        )
        out: dict[str, Any] = {kind.list_key: refs}
        if token:
            out["nextToken"] = token
        return out

    plural = kind.list_key[0].upper() + kind.list_key[1:]
    return {
        f"Create{kind.op}": create,
        f"Update{kind.op}": update,
        f"Describe{kind.op}": describe,
        f"Delete{kind.op}": delete,
        f"List{plural}": list_,
    }


def _list_tags(tenant, writer, op, params):
    tags, token = resources.list_tags(
        tenant, params["resourceArn"], params.get("limit"), params.get("nextToken")
    )
    return {"tags": tags, **({"nextToken": token} if token else {})}


def _tag(tenant, writer, op, params):
    resources.tag(tenant, writer, params["resourceArn"], params["tags"])
    return {}


def _untag(tenant, writer, op, params):
    resources.untag(tenant, writer, params["resourceArn"], params["tagKeys"])
    return {}


HANDLERS: dict[str, Handler] = {
    "ListTagsForResource": _list_tags,
    "TagResource": _tag,
    "UntagResource": _untag,
}
for _kind in KINDS:
    HANDLERS.update(_handlers_for(_kind))

assert set(HANDLERS) == {op.name for op in model.operations()}, "an operation has no handler"
