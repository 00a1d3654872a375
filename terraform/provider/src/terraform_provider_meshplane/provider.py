"""The tfplugin6 Provider service: schemas, plan, apply, read, import, data sources.

Terraform does the diffing; this service's job is to return the real state at every depth
(ReadResource), to plan exactly what the configuration says plus what only the server can
know (PlanResourceChange), and to turn API errors into diagnostics that point at the
attribute in the configuration.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from terraform_provider_meshplane import convert, schema
from terraform_provider_meshplane._proto import tfplugin6_pb2 as pb
from terraform_provider_meshplane._proto import tfplugin6_pb2_grpc as pb_grpc
from terraform_provider_meshplane.client import ConfigError, make_client
from terraform_provider_meshplane.schema import COMPUTED, IDENTIFYING, KINDS, SINGLE, Kind
from terraform_provider_meshplane.values import UNKNOWN, conform, decode, encode, type_json

log = logging.getLogger("terraform-provider-meshplane")

# Blocks the server fills in when a spec leaves them out (see convert.keep_prior_absence).
SERVER_DEFAULTS = {
    "meshplane_mesh": {"spec.egress_filter": {"type": "DROP_ALL"}},
}
_IMPORTED = b'{"imported":true}'
_BOTO_PATH = re.compile(r"\b(spec(?:\.[A-Za-z][A-Za-z0-9]*|\[\d+\])*)")
_API_PATH = re.compile(r"^([A-Za-z][A-Za-z0-9]*(?:\[\d+\]|\.[A-Za-z][A-Za-z0-9]*)*): ")


class Diagnostics(Exception):
    """Errors to hand back to Terraform instead of a result."""

    def __init__(self, *diags: pb.Diagnostic) -> None:
        super().__init__(diags[0].summary if diags else "")
        self.diags = list(diags)


def error(summary: str, detail: str = "", path: list[Any] | None = None) -> pb.Diagnostic:
    diag = pb.Diagnostic(severity=pb.Diagnostic.ERROR, summary=summary, detail=detail)
    for step in path or []:
        if isinstance(step, int):
            diag.attribute.steps.add(element_key_int=step)
        else:
            diag.attribute.steps.add(attribute_name=step)
    return diag


def _block_pb(block: schema.Block) -> pb.Schema.Block:
    out = pb.Schema.Block(description=block.description)
    for a in block.attributes:
        out.attributes.add(
            name=a.name,
            type=type_json(a.type),
            description=a.description,
            required=a.required,
            optional=a.optional,
            computed=a.computed,
            sensitive=a.sensitive,
        )
    for b in block.blocks:
        single = b.nesting == SINGLE
        out.block_types.add(
            type_name=b.name,
            block=_block_pb(b.block),
            nesting=pb.Schema.NestedBlock.SINGLE if single else pb.Schema.NestedBlock.LIST,
            min_items=b.min_items,
            # Terraform wants a single block's min and max both 0 or both 1.
            max_items=b.min_items if single else b.max_items,
        )
    return out


def _date(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _dotted(path: list[Any]) -> str:
    """`spec.listener[0].port_mapping.port`, as the attribute is written in HCL."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _top_names(kind: Kind) -> dict[str, str]:
    names = {"meshName": "mesh_name", "meshOwner": "mesh_owner", kind.name_param: "name"}
    if kind.parent:
        names[kind.parent[1]] = kind.parent[0]
    return names


class Provider(pb_grpc.ProviderServicer):
    def __init__(self) -> None:
        self._client: Any = None
        self._lock = threading.Lock()

    # ---- schemas and validation -------------------------------------------------------

    def GetMetadata(self, request, context):  # noqa: N802 - gRPC method names
        return pb.GetMetadata.Response(
            server_capabilities=pb.ServerCapabilities(get_provider_schema_optional=False),
            resources=[pb.GetMetadata.ResourceMetadata(type_name=t) for t in KINDS],
            data_sources=[pb.GetMetadata.DataSourceMetadata(type_name=t) for t in KINDS],
        )

    def GetProviderSchema(self, request, context):  # noqa: N802
        resp = pb.GetProviderSchema.Response(
            provider=pb.Schema(block=_block_pb(schema.PROVIDER)),
        )
        for t in KINDS:
            resp.resource_schemas[t].CopyFrom(pb.Schema(block=_block_pb(schema.resource_schema(t))))
            resp.data_source_schemas[t].CopyFrom(
                pb.Schema(block=_block_pb(schema.data_source_schema(t)))
            )
        return resp

    def ValidateProviderConfig(self, request, context):  # noqa: N802
        return pb.ValidateProviderConfig.Response()

    def ValidateResourceConfig(self, request, context):  # noqa: N802
        # Enums and ranges are checked here so `terraform validate` catches them with no
        # server; the API checks the rest at apply, naming the same attributes.
        config = decode(request.config.msgpack) or {}
        block = schema.resource_schema(request.type_name)
        return pb.ValidateResourceConfig.Response(
            diagnostics=[
                error("Invalid value", f"{_dotted(path)}: {message}", path)
                for path, message in convert.check(block, config)
            ]
        )

    def ValidateDataResourceConfig(self, request, context):  # noqa: N802
        return pb.ValidateDataResourceConfig.Response()

    def UpgradeResourceState(self, request, context):  # noqa: N802
        # One schema version so far: conform the JSON state to today's type.
        ty = schema.resource_schema(request.type_name).value_type()
        raw = json.loads(request.raw_state.json) if request.raw_state.json else None
        return pb.UpgradeResourceState.Response(
            upgraded_state=pb.DynamicValue(msgpack=encode(conform(ty, raw)))
        )

    def ConfigureProvider(self, request, context):  # noqa: N802
        config = decode(request.config.msgpack) or {}
        try:
            client = make_client({k: v for k, v in config.items() if v is not UNKNOWN})
        except ConfigError as exc:
            path = [exc.attribute] if exc.attribute else None
            return pb.ConfigureProvider.Response(
                diagnostics=[error("Invalid provider configuration", str(exc), path)]
            )
        with self._lock:
            self._client = client
        return pb.ConfigureProvider.Response()

    def StopProvider(self, request, context):  # noqa: N802
        return pb.StopProvider.Response()

    # ---- API calls ----------------------------------------------------------------------

    def _call(self, kind: Kind, op: str, **params: Any) -> dict[str, Any]:
        if self._client is None:
            raise Diagnostics(error("Provider not configured", "ConfigureProvider was not called."))
        method = getattr(self._client, re.sub(r"(?<!^)([A-Z])", r"_\1", op).lower())
        try:
            return method(**params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "Error")
            message = exc.response.get("Error", {}).get("Message", str(exc))
            if code == "NotFoundException":
                raise NotFound(message) from exc
            path = None
            m = _API_PATH.match(message)
            if m:
                block = schema.resource_schema(kind.type_name)
                path = convert.attribute_path(block, m.group(1), _top_names(kind))
            raise Diagnostics(error(f"Meshplane {op}: {code}", message, path)) from exc
        except ParamValidationError as exc:
            # boto3 checks shapes (required members, one-of choices) before sending; its
            # report names the API field too.
            m = _BOTO_PATH.search(str(exc))
            path = None
            if m:
                block = schema.resource_schema(kind.type_name)
                path = convert.attribute_path(block, m.group(1), _top_names(kind))
            raise Diagnostics(error(f"Meshplane {op}: invalid request", str(exc), path)) from exc
        except BotoCoreError as exc:
            raise Diagnostics(error(f"Meshplane {op}: cannot reach the API", str(exc))) from exc

    def _tags(self, kind: Kind, arn: str) -> dict[str, str]:
        tags: dict[str, str] = {}
        token = None
        while True:
            params = {"resourceArn": arn, **({"nextToken": token} if token else {})}
            page = self._call(kind, "ListTagsForResource", **params)
            tags.update({t["key"]: t["value"] for t in page.get("tags", [])})
            token = page.get("nextToken")
            if not token:
                return tags

    def _describe(self, kind: Kind, value: dict[str, Any]) -> dict[str, Any]:
        return self._call(kind, f"Describe{kind.api}", **kind.identity(value))[kind.output]

    def _state(self, kind: Kind, obj: dict[str, Any], tags: dict[str, str], prior_tags: Any):
        """The Terraform value of a described resource (every attribute, real nesting)."""
        md = obj["metadata"]
        value: dict[str, Any] = {
            "name": obj[kind.name_param],
            "id": md.get("uid"),
            "arn": md.get("arn"),
            "created_date": _date(md.get("createdAt")),
            "last_updated_date": _date(md.get("lastUpdatedAt")),
            "resource_owner": md.get("resourceOwner"),
            "version": md.get("version"),
            "tags": tags if tags or prior_tags is not None else None,
            "spec": convert.to_tf(
                schema.resource_schema(kind.type_name).block("spec").block, obj.get("spec")
            ),
        }
        if kind.in_mesh:
            value["mesh_name"] = obj["meshName"]
            value["mesh_owner"] = md.get("meshOwner")
        if kind.parent:
            value[kind.parent[0]] = obj[kind.parent[1]]
        return value

    # ---- managed resources --------------------------------------------------------------

    def ReadResource(self, request, context):  # noqa: N802
        kind = KINDS[request.type_name]
        prior = decode(request.current_state.msgpack)
        try:
            try:
                obj = self._describe(kind, prior)
            except NotFound:
                # Gone outside Terraform: an empty state makes the next plan create it.
                return pb.ReadResource.Response(new_state=pb.DynamicValue(msgpack=encode(None)))
            value = self._state(kind, obj, self._tags(kind, obj["metadata"]["arn"]), prior["tags"])
        except Diagnostics as exc:
            return pb.ReadResource.Response(diagnostics=exc.diags)
        if request.private != _IMPORTED:
            value = convert.keep_prior_absence(
                schema.resource_schema(kind.type_name),
                prior,
                value,
                SERVER_DEFAULTS.get(kind.type_name, {}),
            )
        return pb.ReadResource.Response(new_state=pb.DynamicValue(msgpack=encode(value)))

    def PlanResourceChange(self, request, context):  # noqa: N802
        kind = KINDS[request.type_name]
        prior = decode(request.prior_state.msgpack)
        proposed = decode(request.proposed_new_state.msgpack)
        resp = pb.PlanResourceChange.Response()
        if proposed is None:  # destroy
            resp.planned_state.msgpack = encode(None)
            return resp
        planned = dict(proposed)
        later = []  # computed attributes the server will set
        if prior is None:
            later = list(COMPUTED)
            if kind.in_mesh and planned.get("mesh_owner") is None:
                later.append("mesh_owner")
        else:
            replace = [a for a in IDENTIFYING if a in planned and planned[a] != prior.get(a)]
            for a in replace:
                resp.requires_replace.add().steps.add(attribute_name=a)
            if replace:
                later = list(COMPUTED)
            elif any(planned[k] != prior.get(k) for k in planned if k not in COMPUTED):
                later = ["last_updated_date", "version"]
        for a in later:
            planned[a] = UNKNOWN
        resp.planned_state.msgpack = encode(planned)
        return resp

    def ApplyResourceChange(self, request, context):  # noqa: N802
        kind = KINDS[request.type_name]
        prior = decode(request.prior_state.msgpack)
        planned = decode(request.planned_state.msgpack)
        try:
            if planned is None:
                try:
                    self._call(kind, f"Delete{kind.api}", **kind.identity(prior))
                except NotFound:
                    pass  # already gone: what destroy wanted
                return pb.ApplyResourceChange.Response(
                    new_state=pb.DynamicValue(msgpack=encode(None))
                )
            spec_block = schema.resource_schema(kind.type_name).block("spec").block
            params = {**kind.identity(planned), "spec": convert.to_api(spec_block, planned["spec"])}
            if prior is None:
                tags = planned.get("tags") or {}
                if tags:
                    params["tags"] = [{"key": k, "value": v} for k, v in sorted(tags.items())]
                obj = self._call(kind, f"Create{kind.api}", **params)[kind.output]
            else:
                obj = self._call(kind, f"Update{kind.api}", **params)[kind.output]
                self._sync_tags(kind, obj["metadata"]["arn"], prior.get("tags"), planned["tags"])
        except NotFound as exc:
            # "Mesh 'm' not found." or "Virtual router 'r' not found in mesh 'm'."
            path = ["mesh_name"] if str(exc).startswith("Mesh ") else None
            if path is None and kind.parent:
                path = [kind.parent[0]]
            diag = error(f"Meshplane {kind.api}: not found", str(exc), path)
            return pb.ApplyResourceChange.Response(diagnostics=[diag])
        except Diagnostics as exc:
            return pb.ApplyResourceChange.Response(diagnostics=exc.diags)
        # What was planned, with what only the server knew filled in.
        read = self._state(kind, obj, {}, None)
        new = dict(planned)
        for a, v in new.items():
            if v is UNKNOWN:
                new[a] = read.get(a)
        return pb.ApplyResourceChange.Response(new_state=pb.DynamicValue(msgpack=encode(new)))

    def _sync_tags(self, kind: Kind, arn: str, old: Any, new: Any) -> None:
        old, new = old or {}, new or {}
        gone = sorted(set(old) - set(new))
        if gone:
            self._call(kind, "UntagResource", resourceArn=arn, tagKeys=gone)
        changed = {k: v for k, v in new.items() if old.get(k) != v}
        if changed:
            tags = [{"key": k, "value": v} for k, v in sorted(changed.items())]
            self._call(kind, "TagResource", resourceArn=arn, tags=tags)

    def ImportResourceState(self, request, context):  # noqa: N802
        kind = KINDS[request.type_name]
        names = kind.id_parts()
        parts = request.id.split("/")
        if len(parts) != len(names) or not all(parts):
            want = "/".join(names)
            diag = error(
                "Invalid import id",
                f"id: expected {want} (for example {want.replace('_name', '')}), "
                f"got {request.id!r}.",
            )
            return pb.ImportResourceState.Response(diagnostics=[diag])
        ty = schema.resource_schema(kind.type_name).value_type()
        value = conform(ty, dict(zip(names, parts, strict=True)))
        resp = pb.ImportResourceState.Response()
        resp.imported_resources.add(
            type_name=kind.type_name,
            state=pb.DynamicValue(msgpack=encode(value)),
            private=_IMPORTED,
        )
        return resp

    # ---- data sources -------------------------------------------------------------------

    def ReadDataSource(self, request, context):  # noqa: N802
        kind = KINDS[request.type_name]
        config = decode(request.config.msgpack)
        try:
            obj = self._describe(kind, config)
            value = self._state(kind, obj, self._tags(kind, obj["metadata"]["arn"]), {})
        except NotFound as exc:
            diag = error(f"{kind.type_name} not found", str(exc), ["name"])
            return pb.ReadDataSource.Response(diagnostics=[diag])
        except Diagnostics as exc:
            return pb.ReadDataSource.Response(diagnostics=exc.diags)
        return pb.ReadDataSource.Response(state=pb.DynamicValue(msgpack=encode(value)))


class NotFound(Exception):
    """The API answered NotFoundException."""
