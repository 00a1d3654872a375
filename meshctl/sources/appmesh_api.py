"""App Mesh API data: saved `aws appmesh describe-*` output, or a live App Mesh API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meshctl.model import BY_KEY, KINDS, MESH, Kind, Resource, TranslateError
from meshctl.shapes import ShapeError, spec_to_api, tags_to_map


def from_described(kind: Kind, data: dict[str, Any], origin: str, tags: Any = None) -> Resource:
    """One describe-* response body (`{"virtualNode": {...}}`'s inner object) -> Resource."""
    if not isinstance(data, dict):
        raise TranslateError(f"{origin}: expected an object.")
    mesh = data.get("meshName")
    name = data.get(kind.name_param)
    parent = data.get(kind.parent_param) if kind.parent_param else None
    if not mesh or not name or (kind.parent_param and not parent):
        needed = ", ".join(p for p in ("meshName", kind.name_param, kind.parent_param) if p)
        raise TranslateError(f"{origin}: {kind.label} output needs {needed}.")
    try:
        spec = spec_to_api(kind.spec_shape, data.get("spec") or {}, "spec", "api")
        tag_map = tags_to_map(tags, "tags")
    except ShapeError as exc:
        raise TranslateError(f"{origin}: {exc}") from None
    return Resource(kind, mesh, name, spec, parent=parent, tags=tag_map, origin=origin)


def is_describe_output(data: Any) -> bool:
    return isinstance(data, dict) and any(k in BY_KEY for k in data)


def from_dump_file(path: Path) -> list[Resource]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TranslateError(f"{path}: not readable JSON: {exc}") from None
    documents = data if isinstance(data, list) else [data]
    out = []
    for i, doc in enumerate(documents):
        where = f"{path}" if len(documents) == 1 else f"{path}[{i}]"
        if not is_describe_output(doc):
            raise TranslateError(
                f"{where}: not `aws appmesh describe-*` output (expected one of "
                f"{', '.join(BY_KEY)} at the top level)."
            )
        for key, body in doc.items():
            kind = BY_KEY.get(key)
            if kind is None:
                continue
            label = "?"
            if isinstance(body, dict):
                parent = body.get(kind.parent_param, "") if kind.parent_param else ""
                label = "/".join(p for p in (parent, body.get(kind.name_param, "?")) if p)
            out.append(from_described(kind, body, f"{where}: {kind.label} {label}"))
    return out


def from_dump_dir(directory: Path) -> list[Resource]:
    files = sorted(directory.rglob("*.json"))
    if not files:
        raise TranslateError(f"{directory}: no *.json describe output found.")
    return [r for f in files for r in from_dump_file(f)]


def _pages(client: Any, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
    return [
        item
        for page in client.get_paginator(operation).paginate(**params)
        for item in page.get(key, [])
    ]


def _tags(client: Any, arn: str) -> list[dict[str, str]]:
    return _pages(client, "list_tags_for_resource", "tags", resourceArn=arn)


def from_endpoint(client: Any, origin: str, mesh_filter: str | None = None) -> list[Resource]:
    """List and describe everything an App Mesh API holds (optionally one mesh)."""
    out: list[Resource] = []
    meshes = [m["meshName"] for m in _pages(client, "list_meshes", "meshes")]
    if mesh_filter is not None:
        if mesh_filter not in meshes:
            raise TranslateError(f"{origin}: mesh '{mesh_filter}' not found.")
        meshes = [mesh_filter]

    def add(kind: Kind, **names: str) -> None:
        body = getattr(client, f"describe_{kind.snake}")(**names)[kind.key]
        label = "/".join(names.values())
        where = f"{origin}: {kind.label} {label}"
        out.append(from_described(kind, body, where, _tags(client, body["metadata"]["arn"])))

    for mesh in meshes:
        add(MESH, meshName=mesh)
        for kind in KINDS[1:]:
            if kind.parent:
                continue
            listing = f"list_{kind.snake}s"
            plural = f"{kind.key}s"
            for item in _pages(client, listing, plural, meshName=mesh):
                add(kind, meshName=mesh, **{kind.name_param: item[kind.name_param]})
                for child in (k for k in KINDS if k.parent == kind.key):
                    for sub in _pages(
                        client, f"list_{child.snake}s", f"{child.key}s",
                        meshName=mesh, **{kind.name_param: item[kind.name_param]},
                    ):  # fmt: skip
                        add(
                            child, meshName=mesh, **{kind.name_param: item[kind.name_param]},
                            **{child.name_param: sub[child.name_param]},
                        )  # fmt: skip
    return out
