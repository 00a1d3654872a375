"""CloudFormation templates (JSON or YAML, short tags too) with AWS::AppMesh::* resources.

Intrinsics are resolved where they lead to a value known before deployment: parameters
(default or --var), Fn::GetAtt of another App Mesh resource's name attributes, Fn::Sub,
Fn::Join and Fn::Select over those. `Ref` of an App Mesh resource returns its ARN in
CloudFormation, which no spec field takes, so it is reported rather than guessed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from meshctl.model import BY_CFN, MESH, Kind, Resource, TranslateError
from meshctl.shapes import ShapeError, spec_to_api, tags_to_map

TYPE_PREFIX = "AWS::AppMesh::"


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation's short tags (!Ref, !GetAtt, !Sub, …)."""


def _short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_Loader.add_multi_constructor("!", _short_tag)


def load_template(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise TranslateError(f"{path}: not a readable template: {exc}") from None


def is_template(data: Any) -> bool:
    return isinstance(data, dict) and (
        "AWSTemplateFormatVersion" in data
        or any(
            isinstance(r, dict) and str(r.get("Type", "")).startswith("AWS::")
            for r in (data.get("Resources") or {}).values()
        )
    )


def _name_property(kind: Kind) -> str:
    return f"{kind.cfn}Name"


class _Template:
    def __init__(self, path: Path, data: dict[str, Any], parameters: dict[str, str]) -> None:
        self.path = path
        self.resources: dict[str, dict[str, Any]] = data.get("Resources") or {}
        self.parameters = data.get("Parameters") or {}
        self.overrides = parameters
        self._resolving: set[str] = set()

    def where(self, logical_id: str) -> str:
        type_ = self.resources.get(logical_id, {}).get("Type", "?")
        return f"{self.path}: {logical_id} ({type_})"

    def resolve(self, value: Any, logical_id: str) -> Any:
        if isinstance(value, list):
            return [self.resolve(v, logical_id) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(str(arg), logical_id)
            if key == "Fn::GetAtt":
                parts = arg.split(".", 1) if isinstance(arg, str) else arg
                if not isinstance(parts, list) or len(parts) != 2:
                    raise TranslateError(f"{self.where(logical_id)}: malformed Fn::GetAtt {arg!r}.")
                return self._get_att(str(parts[0]), str(parts[1]), logical_id)
            if key == "Fn::Sub":
                return self._sub(arg, logical_id)
            if key == "Fn::Join":
                delimiter, items = arg
                items = self.resolve(items, logical_id)
                return str(delimiter).join(str(self.resolve(i, logical_id)) for i in items)
            if key == "Fn::Select":
                index, items = self.resolve(arg, logical_id)
                return items[int(index)]
            if key.startswith("Fn::") or key == "Condition":
                raise TranslateError(
                    f"{self.where(logical_id)}: {key} is not supported; only Ref, Fn::GetAtt, "
                    "Fn::Sub, Fn::Join and Fn::Select are resolved."
                )
        return {k: self.resolve(v, logical_id) for k, v in value.items()}

    def _ref(self, name: str, logical_id: str) -> Any:
        if name in self.overrides:
            return self.overrides[name]
        if name in self.parameters:
            param = self.parameters[name] or {}
            if "Default" not in param:
                raise TranslateError(
                    f"{self.where(logical_id)}: parameter '{name}' has no Default; "
                    f"pass --var {name}=VALUE."
                )
            return param["Default"]
        if name.startswith("AWS::"):
            raise TranslateError(
                f"{self.where(logical_id)}: pseudo parameter '{name}' has no value outside a "
                f"stack; pass --var {name}=VALUE."
            )
        if name in self.resources:
            raise TranslateError(
                f"{self.where(logical_id)}: Ref {name} returns an ARN, which no App Mesh spec "
                f"field takes; use Fn::GetAtt {name}.<Kind>Name (e.g. VirtualNodeName)."
            )
        raise TranslateError(f"{self.where(logical_id)}: Ref to unknown '{name}'.")

    def _get_att(self, target: str, attribute: str, logical_id: str) -> Any:
        resource = self.resources.get(target)
        if resource is None:
            raise TranslateError(f"{self.where(logical_id)}: Fn::GetAtt of unknown '{target}'.")
        kind = _kind(resource)
        names = {"MeshName"}
        if kind is not None:
            names.add(_name_property(kind))
            if kind.parent:
                names.add(f"{kind.parent[0].upper()}{kind.parent[1:]}Name")
        if kind is None or attribute not in names:
            raise TranslateError(
                f"{self.where(logical_id)}: cannot resolve Fn::GetAtt {target}.{attribute}: only "
                "the name attributes of App Mesh resources are known before deployment."
            )
        key = f"{target}.{attribute}"
        if key in self._resolving:
            raise TranslateError(f"{self.where(logical_id)}: {key} refers to itself.")
        self._resolving.add(key)
        try:
            props = resource.get("Properties") or {}
            if attribute not in props:
                raise TranslateError(f"{self.where(target)}: has no {attribute}.")
            return self.resolve(props[attribute], target)
        finally:
            self._resolving.discard(key)

    def _sub(self, arg: Any, logical_id: str) -> str:
        if isinstance(arg, list):
            template, variables = arg[0], arg[1] if len(arg) > 1 else {}
        else:
            template, variables = arg, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(self.resolve(variables[name], logical_id))
            if "." in name:
                target, attribute = name.split(".", 1)
                return str(self._get_att(target, attribute, logical_id))
            return str(self._ref(name, logical_id))

        return re.sub(r"\$\{([^}]+)\}", replace, str(template))

    def load(self) -> list[Resource]:
        out = []
        for logical_id, resource in self.resources.items():
            kind = _kind(resource)
            if kind is None:
                if str(resource.get("Type", "")).startswith(TYPE_PREFIX):
                    raise TranslateError(
                        f"{self.where(logical_id)}: unknown App Mesh resource type."
                    )
                continue
            if "Condition" in resource:
                raise TranslateError(f"{self.where(logical_id)}: Conditions are not supported.")
            props = self.resolve(resource.get("Properties") or {}, logical_id)
            out.append(self._resource(kind, logical_id, props))
        return out

    def _resource(self, kind: Kind, logical_id: str, props: dict[str, Any]) -> Resource:
        where = self.where(logical_id)
        allowed = {"MeshName", "MeshOwner", "Spec", "Tags", _name_property(kind)}
        parent_prop = None
        if kind.parent:
            parent_prop = f"{kind.parent[0].upper()}{kind.parent[1:]}Name"
            allowed.add(parent_prop)
        unknown = sorted(set(props) - allowed)
        if unknown:
            raise TranslateError(f"{where}: unsupported property '{unknown[0]}'.")
        name = props.get(_name_property(kind))
        if not name:
            raise TranslateError(f"{where}: {_name_property(kind)} is required.")
        mesh = name if kind is MESH else props.get("MeshName")
        if not mesh:
            raise TranslateError(f"{where}: MeshName is required.")
        parent = props.get(parent_prop) if parent_prop else None
        if parent_prop and not parent:
            raise TranslateError(f"{where}: {parent_prop} is required.")
        try:
            spec = spec_to_api(kind.spec_shape, props.get("Spec"), "Spec", "cloudformation")
            tags = tags_to_map(props.get("Tags"), "Tags")
        except ShapeError as exc:
            raise TranslateError(f"{where}: {exc}") from None
        return Resource(
            kind, str(mesh), str(name), spec, parent=parent and str(parent), tags=tags,
            origin=where,
        )  # fmt: skip


def _kind(resource: dict[str, Any]) -> Kind | None:
    type_ = str(resource.get("Type", ""))
    if not type_.startswith(TYPE_PREFIX):
        return None
    return BY_CFN.get(type_[len(TYPE_PREFIX) :])


def from_template(
    path: Path, data: dict[str, Any], parameters: dict[str, str] | None = None
) -> list[Resource]:
    return _Template(path, data, parameters or {}).load()
