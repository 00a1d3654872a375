"""Immutable, hashable JSON: the form App Mesh specs take inside the compiler.

Specs arrive as the dicts the API stored. `freeze` turns them into `FrozenDict` (a
read-only mapping with a cached hash) and tuples, so a `MeshContext` can be a frozen
dataclass, used as a cache key, and never changed by a generator by accident.
"""

from collections.abc import Iterator, Mapping
from typing import Any


class FrozenDict(Mapping):
    """A read-only mapping that hashes by content. Iterates in key order."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping | None = None):
        items = dict(data or {})
        self._data = {k: items[k] for k in sorted(items, key=_sort_key)}
        self._hash: int | None = None

    def __getitem__(self, key):
        return self._data[key]

    # Mapping's get/__contains__ go through __getitem__ and an exception; the compiler
    # calls these millions of times on a large mesh.
    def get(self, key, default=None):
        return self._data.get(key, default)

    def __contains__(self, key) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._data.items()))
        return self._hash

    def __eq__(self, other) -> bool:
        if isinstance(other, FrozenDict):
            return hash(self) == hash(other) and self._data == other._data
        return isinstance(other, Mapping) and self._data == dict(other)

    def __repr__(self) -> str:
        return f"FrozenDict({self._data!r})"


def _sort_key(key: Any) -> tuple:
    # Keys are strings in specs, tuples for endpoint maps; never compare str with tuple.
    return (type(key).__name__, key)


EMPTY = FrozenDict()


def freeze(value: Any) -> Any:
    """Deep-freeze JSON-like data: dicts → FrozenDict, lists → tuples."""
    if isinstance(value, FrozenDict):
        return value
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain JSON form back (for messages and golden files)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def dig(spec: Any, *path: str, default: Any = None) -> Any:
    """spec[a][b][c] or default when any step is missing or None."""
    for key in path:
        # Exact type checks first: isinstance against the Mapping ABC is slow on hot paths.
        if type(spec) is FrozenDict or type(spec) is dict or isinstance(spec, Mapping):
            spec = spec.get(key)
        else:
            return default
        if spec is None:
            return default
    return spec
