"""Terraform's value encoding (cty msgpack) and type descriptions (cty JSON).

Terraform sends and expects object values as msgpack with every attribute present; an
unknown value (known only after apply) is msgpack extension 0. We keep values as plain
Python data (dict, list, str, int, float, bool, None) plus the UNKNOWN sentinel, and types
as cty's JSON form: "string", ["list", T], ["object", {name: T}], and so on.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack


class _Unknown:
    """A value Terraform will only know after apply (cty's unknown)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()

# cty writes unknowns as extension 0; newer Terraform releases write "refined" unknowns
# (what is known about a value still to come) as extension 12. Both mean "unknown" here.
_UNKNOWN_EXT = {0, 12}


def _ext_hook(code: int, data: bytes) -> Any:
    if code in _UNKNOWN_EXT:
        return UNKNOWN
    raise ValueError(f"unexpected msgpack extension {code} in a value from Terraform")


def _default(obj: Any) -> Any:
    if obj is UNKNOWN:
        return msgpack.ExtType(0, b"\x00")
    raise TypeError(f"cannot encode {type(obj).__name__} for Terraform")


def decode(data: bytes) -> Any:
    """A msgpack DynamicValue from Terraform as Python data (UNKNOWN where unknown)."""
    if not data:
        return None
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def encode(value: Any) -> bytes:
    """Python data as the msgpack DynamicValue Terraform decodes against the schema type."""
    return msgpack.packb(value, default=_default, use_bin_type=True)


def type_json(ty: Any) -> bytes:
    """A cty type as the JSON bytes a schema attribute carries."""
    return json.dumps(ty, separators=(",", ":")).encode()


def conform(ty: Any, value: Any) -> Any:
    """`value` shaped to type `ty`: missing object attributes become null, numbers stay numbers.

    Used where values come from outside Terraform's msgpack (JSON state being upgraded), so
    the object we send back names every attribute the schema has.
    """
    if value is None or value is UNKNOWN:
        return value
    if isinstance(ty, str):
        if ty == "number" and isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    kind = ty[0]
    if kind == "object":
        return {k: conform(t, value.get(k)) for k, t in ty[1].items()}
    if kind in ("list", "set"):
        return [conform(ty[1], v) for v in value]
    if kind == "map":
        return {k: conform(ty[1], v) for k, v in value.items()}
    return value


def has_unknown(value: Any) -> bool:
    """Whether any part of `value` is still unknown."""
    if value is UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(has_unknown(v) for v in value)
    return False
