"""Values between the API's JSON (camelCase) and Terraform's (snake_case, per the schema).

Both directions walk the same Block the schema was built from, so a field is either
carried both ways or not at all. Reading keeps every level of nesting, which is what lets
Terraform see drift at any depth.
"""

from __future__ import annotations

import re
from typing import Any

from terraform_provider_meshplane.schema import SINGLE, Attribute, Block

_INTEGER = {"integer", "long"}


def _scalar_to_api(attr: Attribute, value: Any) -> Any:
    shape = attr.shape
    kind = shape.member.type_name if shape.type_name == "list" else shape.type_name
    if kind in _INTEGER:
        return int(value)
    return value


def to_api(block: Block, value: dict[str, Any] | None) -> dict[str, Any]:
    """A Terraform block value as the API object; nulls and empty lists are left out."""
    out: dict[str, Any] = {}
    if not value:
        return out
    for attr in block.attributes:
        v = value.get(attr.name)
        if v is None or attr.api is None:
            continue
        if attr.type[0] == "map":
            out[attr.api] = [{"key": k, "value": x} for k, x in sorted(v.items())]
        elif attr.type[0] == "set":
            out[attr.api] = [_scalar_to_api(attr, x) for x in v]
        else:
            out[attr.api] = _scalar_to_api(attr, v)
    for bt in block.blocks:
        v = value.get(bt.name)
        if bt.nesting == SINGLE:
            if v is not None:
                out[bt.api] = to_api(bt.block, v)
        elif v:
            out[bt.api] = [to_api(bt.block, item) for item in v]
    return out


def _scalar_to_tf(attr: Attribute, value: Any) -> Any:
    if attr.type == "number" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def to_tf(block: Block, value: dict[str, Any] | None) -> dict[str, Any]:
    """An API object as the Terraform value of `block`: every attribute present."""
    value = value or {}
    out: dict[str, Any] = {}
    for attr in block.attributes:
        v = value.get(attr.api) if attr.api else None
        if v is None or v == []:
            out[attr.name] = None
        elif attr.type[0] == "map":
            out[attr.name] = {item["key"]: item["value"] for item in v}
        elif attr.type[0] == "set":
            out[attr.name] = sorted(v)
        else:
            out[attr.name] = _scalar_to_tf(attr, v)
    for bt in block.blocks:
        v = value.get(bt.api)
        if bt.nesting == SINGLE:
            out[bt.name] = None if v is None else to_tf(bt.block, v)
        else:
            out[bt.name] = [to_tf(bt.block, item) for item in v or []]
    return out


def empty(block: Block, value: Any) -> bool:
    """Whether a block value carries nothing (every attribute null, every list empty)."""
    if value is None:
        return True
    return all(value.get(a.name) is None for a in block.attributes) and all(
        empty(b.block, value.get(b.name)) if b.nesting == SINGLE else not value.get(b.name)
        for b in block.blocks
    )


def keep_prior_absence(block: Block, prior: Any, read: Any, defaults: dict[str, Any]) -> Any:
    """`read`, with blocks the server filled in by default left absent where `prior` had none.

    The server completes some specs (a mesh without an egress filter gets DROP_ALL). A
    configuration that leaves such a block out would otherwise plan a change forever.
    `defaults` maps a block path (`spec.egress_filter`) to the value the server fills in;
    a block read with exactly that value, or with nothing, stays absent when it was absent.
    Anything else the server returns is real state, and shows as drift.
    """

    def walk(blk: Block, p: Any, r: Any, path: str) -> Any:
        if r is None:
            return None
        out = dict(r)
        for bt in blk.blocks:
            sub = f"{path}.{bt.name}" if path else bt.name
            rv = r.get(bt.name)
            pv = p.get(bt.name) if p else None
            if bt.nesting == SINGLE:
                if rv is None:
                    continue
                if pv is None and sub in defaults and rv == defaults[sub]:
                    out[bt.name] = None
                    continue
                nv = walk(bt.block, pv, rv, sub)
                out[bt.name] = None if pv is None and empty(bt.block, nv) else nv
            else:
                pv = pv or []
                out[bt.name] = [
                    walk(bt.block, pv[i] if i < len(pv) else None, item, sub)
                    for i, item in enumerate(rv or [])
                ]
        return out

    return walk(block, prior, read, "")


_STEP = re.compile(r"([A-Za-z0-9_]+)|\[(\d+)\]")


def attribute_path(block: Block, api_path: str, top: dict[str, str]) -> list[Any] | None:
    """`spec.listeners[0].portMapping.port` as Terraform steps (`spec.listener[0].port_mapping`).

    `top` maps the API's top-level parameter names (`virtualNodeName`) to attributes. Steps
    are attribute names (str) and list indexes (int); None when the path is not ours.
    """
    steps: list[Any] = []
    current: Block | None = block
    for m in _STEP.finditer(api_path):
        name, index = m.group(1), m.group(2)
        if index is not None:
            steps.append(int(index))
            continue
        if not steps and name in top:
            return [top[name]]
        if current is None:
            return steps or None
        found = next((b for b in current.blocks if b.api == name), None)
        if found is not None:
            steps.append(found.name)
            current = found.block
            continue
        attr = next((a for a in current.attributes if a.api == name), None)
        if attr is None:
            return steps or None
        steps.append(attr.name)
        current = None
    return steps or None


def check(block: Block, value: Any, path: list[Any] | None = None) -> list[tuple[list[Any], str]]:
    """Known values the API would refuse, found before any call: enums and numeric ranges.

    Returns (attribute path, message) pairs; the server still checks everything else
    (required members of one-of choices, references), with the same field names.
    """
    problems: list[tuple[list[Any], str]] = []
    path = path or []
    if not isinstance(value, dict):
        return problems
    for attr in block.attributes:
        v = value.get(attr.name)
        if attr.shape is None or v is None or not isinstance(v, str | int | float | list):
            continue
        shape = attr.shape.member if attr.shape.type_name == "list" else attr.shape
        for item in v if isinstance(v, list) else [v]:
            message = _refusal(shape, item)
            if message:
                problems.append(([*path, attr.name], message))
    for bt in block.blocks:
        v = value.get(bt.name)
        if bt.nesting == SINGLE:
            problems += check(bt.block, v, [*path, bt.name])
        elif isinstance(v, list):
            for i, item in enumerate(v):
                problems += check(bt.block, item, [*path, bt.name, i])
    return problems


def _refusal(shape: Any, value: Any) -> str | None:
    if getattr(shape, "enum", None) and isinstance(value, str) and value not in shape.enum:
        return f"'{value}' is not one of {', '.join(shape.enum)}."
    if shape.type_name in _INTEGER and isinstance(value, int | float):
        lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
        if lo is not None and value < lo:
            return f"must be at least {lo}."
        if hi is not None and value > hi:
            return f"must be at most {hi}."
    return None
