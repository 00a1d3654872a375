"""Validate request values against the shapes in botocore's App Mesh model.

Every error names the field path (`spec.listeners[0].portMapping.port`) so the user can
find what to fix. Checks: types, required members, unknown members, enums, numeric
ranges, string and list lengths, and unions (exactly one member set).
"""

import re
from typing import Any

from botocore.model import Shape

from meshapi.appmesh.errors import BadRequest


def _describe(path: str) -> str:
    return path or "request"


def validate(shape: Shape, value: Any, path: str = "") -> None:
    kind = shape.type_name
    where = _describe(path)
    if kind == "structure":
        _structure(shape, value, path)
    elif kind == "list":
        if not isinstance(value, list):
            raise BadRequest(f"{where}: expected a list.")
        _length(shape, len(value), where, "items")
        for i, item in enumerate(value):
            validate(shape.member, item, f"{path}[{i}]")
    elif kind == "map":
        if not isinstance(value, dict):
            raise BadRequest(f"{where}: expected an object.")
        for key, item in value.items():
            validate(shape.value, item, f"{path}.{key}")
    elif kind == "string":
        if not isinstance(value, str):
            raise BadRequest(f"{where}: expected a string.")
        if "\x00" in value:
            # Nothing in App Mesh's model carries one, and PostgreSQL cannot store one.
            raise BadRequest(f"{where}: must not contain NUL (\\u0000) characters.")
        if shape.enum and value not in shape.enum:
            raise BadRequest(f"{where}: '{value}' is not one of {', '.join(shape.enum)}.")
        _length(shape, len(value), where, "characters")
        pattern = shape.metadata.get("pattern")
        if pattern and not re.fullmatch(pattern, value):
            raise BadRequest(f"{where}: '{value}' does not match the pattern {pattern}.")
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{where}: expected an integer.")
        _range(shape, value, where)
    elif kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"{where}: expected a number.")
        _range(shape, value, where)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise BadRequest(f"{where}: expected true or false.")
    elif kind == "timestamp":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise BadRequest(f"{where}: expected a timestamp.")


def _structure(shape: Shape, value: Any, path: str) -> None:
    where = _describe(path)
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: expected an object.")
    members = shape.members
    for key in value:
        if key not in members:
            raise BadRequest(f"{_join(path, key)}: unknown field.")
    for key in shape.required_members:
        if value.get(key) is None:
            raise BadRequest(f"{_join(path, key)}: this field is required.")
    present = [k for k in members if value.get(k) is not None]
    if shape.metadata.get("union") and len(present) != 1:
        options = ", ".join(members)
        if not present:
            raise BadRequest(f"{where}: set exactly one of {options}.")
        raise BadRequest(f"{where}: set exactly one of {options}; got {' and '.join(present)}.")
    for key in present:
        validate(members[key], value[key], _join(path, key))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _length(shape: Shape, n: int, where: str, unit: str) -> None:
    lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
    if lo is not None and n < lo:
        raise BadRequest(f"{where}: must have at least {lo} {unit}.")
    if hi is not None and n > hi:
        raise BadRequest(f"{where}: must have at most {hi} {unit}.")


def _range(shape: Shape, value: float, where: str) -> None:
    lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
    if lo is not None and value < lo:
        raise BadRequest(f"{where}: must be at least {lo}.")
    if hi is not None and value > hi:
        raise BadRequest(f"{where}: must be at most {hi}.")
