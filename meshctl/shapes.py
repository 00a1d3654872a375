"""App Mesh spec shapes from botocore's model, and the mapping every source style needs.

The shapes are read from the model botocore ships (`botocore.loaders`), never retyped: a
source key is matched to a shape member by name with case and underscores ignored, which
covers Terraform's snake_case (`port_mapping`), CloudFormation's PascalCase (`PortMapping`,
`TLS`, `AWSCloudMap`) and the Kubernetes controller's camelCase (`certificateARN`). What name
matching cannot express is listed in `TERRAFORM_SPECIAL_CASES` (docs/migration.md has the
same table).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import botocore.loaders
import botocore.model

# API list member -> the singular block name aws_appmesh_* resources use for it. Every
# other list of structures keeps its API name in Terraform (`metadata`, `json`).
TERRAFORM_LIST_BLOCKS: dict[str, str] = {
    "listeners": "listener",
    "backends": "backend",
    "weightedTargets": "weighted_target",
    "headers": "header",
    "queryParameters": "query_parameter",
}
# API lists of {key, value} structures that Terraform writes as a map attribute.
TERRAFORM_MAP_LISTS: frozenset[str] = frozenset({"attributes"})

TERRAFORM_SPECIAL_CASES: list[tuple[str, str, str]] = [
    ("spec.listeners[]", "spec.listener (repeated block)", "virtual node, router, gateway"),
    ("spec.backends[].virtualService", "spec.backend.virtual_service (repeated block)", "node"),
    ("*.action.weightedTargets[]", "*.action.weighted_target (repeated block)", "route"),
    ("*.match.headers[]", "*.match.header (repeated block)", "route, gateway route"),
    ("*.match.queryParameters[]", "*.match.query_parameter (repeated block)", "route, gw route"),
    (
        "serviceDiscovery.awsCloudMap.attributes [{key, value}]",
        "service_discovery.aws_cloud_map.attributes = { key = value } (map)",
        "virtual node",
    ),
    ("tags [{key, value}]", "tags = { key = value } (map)", "all"),
    ("any structure", "a block written once (a list of one in state)", "all"),
    ("zero values", 'state stores unset strings as "" and ints as 0: dropped', "all"),
]


@cache
def service_model() -> botocore.model.ServiceModel:
    loader = botocore.loaders.Loader()
    return botocore.model.ServiceModel(loader.load_service_model("appmesh", "service-2"))


def shape(name: str) -> botocore.model.Shape:
    return service_model().shape_for(name)


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def camel_to_snake(name: str) -> str:
    """httpRoute -> http_route, http2Route -> http2_route, awsCloudMap -> aws_cloud_map."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def terraform_name(member: str) -> str:
    return TERRAFORM_LIST_BLOCKS.get(member) or camel_to_snake(member)


class ShapeError(Exception):
    """A value does not fit the App Mesh shape; `path` says where in the source it sits."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


_ABSENT = object()


def _find_member(struct: botocore.model.StructureShape, key: str, style: str) -> str | None:
    if style == "api":
        return key if key in struct.members else None
    if style == "terraform":
        for api_name, block in TERRAFORM_LIST_BLOCKS.items():
            if key == block and api_name in struct.members:
                return api_name
    wanted = _norm(key)
    for member in struct.members:
        if _norm(member) == wanted:
            return member
    return None


def _is_kv_list(member_shape: botocore.model.Shape) -> bool:
    return (
        member_shape.type_name == "list"
        and member_shape.member.type_name == "structure"
        and set(member_shape.member.members) == {"key", "value"}
    )


def to_api(shape_: botocore.model.Shape, value: Any, path: str, style: str) -> Any:
    """Convert a source value to the API's shape; `_ABSENT` for what the API should not see.

    style: "api" (exact names), "terraform" (snake_case, blocks as lists of one, zero values
    for unset), "cloudformation" (PascalCase, numbers and booleans may be strings),
    "kubernetes" (camelCase with the controller's ARN spellings).
    """
    if value is None:
        return _ABSENT
    kind = shape_.type_name
    if kind == "structure":
        if style == "terraform" and isinstance(value, list):
            if not value:
                return _ABSENT
            if len(value) > 1:
                raise ShapeError(path, f"only one '{path.rsplit('.', 1)[-1]}' block is allowed.")
            value = value[0]
        if not isinstance(value, dict):
            raise ShapeError(path, f"expected an object ({shape_.name}).")
        out: dict[str, Any] = {}
        for key, item in value.items():
            member = _find_member(shape_, key, style)
            if member is None:
                known = ", ".join(
                    terraform_name(m) if style == "terraform" else m for m in shape_.members
                )
                raise ShapeError(
                    f"{path}.{key}", f"App Mesh has no such field here (known: {known})."
                )
            member_shape = shape_.members[member]
            if style == "terraform" and member in TERRAFORM_MAP_LISTS and isinstance(item, dict):
                item = [{"key": k, "value": v} for k, v in item.items()]
            converted = to_api(member_shape, item, f"{path}.{key}", style)
            if (
                style == "terraform"
                and member not in shape_.required_members
                and converted in (0, "")
                and not isinstance(converted, bool)
            ):
                continue  # state's zero value for an unset optional number or string
            if converted is not _ABSENT:
                out[member] = converted
        if not out and style == "terraform":
            return _ABSENT
        return out
    if kind == "list":
        if not isinstance(value, list):
            raise ShapeError(path, "expected a list.")
        items = []
        for i, item in enumerate(value):
            converted = to_api(shape_.member, item, f"{path}[{i}]", style)
            if converted is not _ABSENT:
                items.append(converted)
        if not items and style == "terraform":
            return _ABSENT
        return items
    if kind == "map":
        if not isinstance(value, dict):
            raise ShapeError(path, "expected a map.")
        return {k: to_api(shape_.value, v, f"{path}.{k}", style) for k, v in value.items()}
    return _scalar(shape_, value, path, style)


def _scalar(shape_: botocore.model.Shape, value: Any, path: str, style: str) -> Any:
    kind = shape_.type_name
    lenient = style in ("cloudformation", "kubernetes", "terraform")
    if kind in ("integer", "long"):
        if lenient and isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ShapeError(path, f"expected a whole number, got {value!r}.")
        return value
    if kind in ("float", "double"):
        if lenient and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ShapeError(path, f"expected a number, got {value!r}.")
        return value
    if kind == "boolean":
        if lenient and isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            raise ShapeError(path, f"expected true or false, got {value!r}.")
        return value
    if kind == "string":
        if lenient and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ShapeError(path, f"expected a string, got {value!r}.")
        if style == "terraform" and value == "":
            return value  # state's zero value for an unset string: the structure drops it
        if shape_.enum and value not in shape_.enum:
            raise ShapeError(path, f"'{value}' is not one of {', '.join(shape_.enum)}.")
        return value
    return value


def spec_to_api(spec_shape: str, value: Any, path: str, style: str) -> dict[str, Any]:
    converted = to_api(shape(spec_shape), value, path, style)
    return {} if converted is _ABSENT else converted


def tags_to_map(tags: Any, path: str) -> dict[str, str]:
    """Tags in any source style ([{key, value}], [{Key, Value}] or a map) as a plain map."""
    if not tags:
        return {}
    if isinstance(tags, dict):
        return {str(k): str(v) for k, v in tags.items()}
    if isinstance(tags, list):
        out = {}
        for i, tag in enumerate(tags):
            lowered = {str(k).lower(): v for k, v in (tag or {}).items()}
            if "key" not in lowered:
                raise ShapeError(f"{path}[{i}]", "a tag needs a key.")
            out[str(lowered["key"])] = str(lowered.get("value", ""))
        return out
    raise ShapeError(path, "expected a list of {key, value} or a map.")
