"""Plan and apply Resources against an App Mesh API: describe first, then create, update or
leave alone, in dependency order, so a re-run changes nothing."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, TextIO

from botocore.exceptions import ClientError, ParamValidationError
from botocore.validate import ParamValidator

from meshctl.model import (
    KINDS,
    MESH,
    Resource,
    TranslateError,
    normalise_spec,
    ordered,
    references,
)
from meshctl.shapes import service_model

ACTIONS = ("create", "update", "unchanged")
SYMBOLS = {"create": "+", "update": "~", "unchanged": "="}
DONE = {"create": "created", "update": "updated", "unchanged": "unchanged"}
PLANNED = {"create": "to create", "update": "to update", "unchanged": "unchanged"}


class ApplyError(Exception):
    """The API refused a write; the message names the resource and where it came from."""


@dataclass
class Step:
    resource: Resource
    action: str
    tags_to_add: dict[str, str]


def _request(resource: Resource) -> dict[str, Any]:
    params: dict[str, Any] = {**resource.names(), "spec": resource.spec}
    if resource.tags:
        params["tags"] = [{"key": k, "value": v} for k, v in resource.tags.items()]
    return params


def check(resources: list[Resource]) -> list[Resource]:
    """Order the resources and validate every request locally before anything is written."""
    model = service_model()
    validator = ParamValidator()
    result = ordered(resources)
    for resource in result:
        operation = model.operation_model(f"Create{resource.kind.cfn}")
        report = validator.validate(_request(resource), operation.input_shape)
        if report.has_errors():
            raise TranslateError(f"{resource.origin}: {report.generate_report()}")
    return result


def _not_found(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "NotFoundException"


def _describe(client: Any, resource: Resource) -> dict[str, Any] | None:
    try:
        response = getattr(client, f"describe_{resource.kind.snake}")(**resource.names())
    except ClientError as exc:
        if _not_found(exc):
            return None
        raise ApplyError(f"{resource.origin}: describing {resource.label} failed: {exc}") from None
    return response[resource.kind.key]


def _check_references(client: Any, steps: list[Step]) -> None:
    """Every name a resource points at is imported too or exists already: found now, before
    any write, rather than as an API error halfway through."""
    incoming = {s.resource.ident for s in steps}
    looked_up: dict[tuple[str, str, str, str], bool] = {}
    for step in steps:
        resource = step.resource
        for field, kind, parent, name in references(resource):
            mesh = name if kind is MESH else resource.mesh
            ident = (kind.key, mesh, parent, name)
            if ident in incoming:
                continue
            if ident not in looked_up:
                probe = Resource(kind, mesh, name, {}, parent=parent or None)
                looked_up[ident] = _describe(client, probe) is not None
            if not looked_up[ident]:
                where = (
                    "the source nor this tenant"
                    if kind is MESH
                    else f"the source nor mesh '{mesh}'"
                )
                raise TranslateError(
                    f"{resource.origin}: {field} names {kind.label} '{name}', which is in "
                    f"neither the source nor {where}."
                )


def plan(client: Any, resources: list[Resource]) -> list[Step]:
    steps = _plan(client, resources)
    _check_references(client, steps)
    return steps


def _plan(client: Any, resources: list[Resource]) -> list[Step]:
    steps = []
    for resource in check(resources):
        current = _describe(client, resource)
        if current is None:
            steps.append(Step(resource, "create", {}))
            continue
        tags_to_add: dict[str, str] = {}
        if resource.tags:
            arn = current["metadata"]["arn"]
            existing = {
                t["key"]: t["value"]
                for page in client.get_paginator("list_tags_for_resource").paginate(resourceArn=arn)
                for t in page.get("tags", [])
            }
            tags_to_add = {k: v for k, v in resource.tags.items() if existing.get(k) != v}
        same = current.get("spec") == normalise_spec(resource.kind, resource.spec)
        steps.append(
            Step(resource, "unchanged" if same and not tags_to_add else "update", tags_to_add)
        )
    return steps


def _write(client: Any, step: Step) -> None:
    resource = step.resource
    kind = resource.kind.snake
    try:
        if step.action == "create":
            getattr(client, f"create_{kind}")(**_request(resource))
        elif step.action == "update":
            current = getattr(client, f"describe_{kind}")(**resource.names())[resource.kind.key]
            if current.get("spec") != normalise_spec(resource.kind, resource.spec):
                getattr(client, f"update_{kind}")(**resource.names(), spec=resource.spec)
            if step.tags_to_add:
                client.tag_resource(
                    resourceArn=current["metadata"]["arn"],
                    tags=[{"key": k, "value": v} for k, v in step.tags_to_add.items()],
                )
    except (ClientError, ParamValidationError) as exc:
        raise ApplyError(
            f"{resource.origin}: could not {step.action} {resource.label}: {exc}"
        ) from None


def summary(steps: list[Step], dry_run: bool = False) -> str:
    words = PLANNED if dry_run else DONE
    counts = Counter((s.resource.kind.key, s.action) for s in steps)
    lines = []
    for kind in KINDS:
        per_kind = [f"{counts[(kind.key, a)]} {words[a]}" for a in ACTIONS if counts[(kind.key, a)]]
        if per_kind:
            lines.append(f"  {kind.label + 's':<17} {', '.join(per_kind)}")
    totals = Counter(s.action for s in steps)
    lines.append("  total: " + ", ".join(f"{totals[a]} {words[a]}" for a in ACTIONS))
    return "\n".join(lines)


def run(client: Any, resources: list[Resource], dry_run: bool, out: TextIO) -> list[Step]:
    """Plan, print the plan, and (unless dry_run) carry it out, one resource at a time."""
    steps = plan(client, resources)
    for step in steps:
        line = f"{SYMBOLS[step.action]} {step.action:<9} {step.resource.label}"
        print(f"{line}  ({step.resource.origin})", file=out)
        if not dry_run and step.action != "unchanged":
            _write(client, step)
    print(("Plan (dry run, nothing written):" if dry_run else "Summary:"), file=out)
    print(summary(steps, dry_run), file=out)
    return steps
