"""Terraform sources: state (`terraform.tfstate`, `terraform show -json`) and `.tf` files.

Both hold `aws_appmesh_*` (or `meshplane_*`, same arguments) resources; state has concrete
values, configuration has references that are resolved here when they name another App
Mesh resource's name-like attribute, a variable default or a local.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshctl import hcl
from meshctl.model import BY_SNAKE, MESH, Kind, Resource, TranslateError
from meshctl.shapes import ShapeError, camel_to_snake, spec_to_api, tags_to_map

PREFIXES = ("aws_appmesh_", "meshplane_")
# Attributes known before apply, so a reference to them resolves to a value here.
NAME_ATTRIBUTES = ("name", "mesh_name", "virtual_router_name", "virtual_gateway_name")
ALLOWED_ARGUMENTS = {
    "name", "mesh_name", "mesh_owner", "spec", "tags", "virtual_router_name",
    "virtual_gateway_name", "provider", "depends_on", "lifecycle",
    # computed, present in state
    "id", "arn", "created_date", "last_updated_date", "resource_owner", "tags_all",
}  # fmt: skip


def kind_of(type_: str) -> Kind | None:
    for prefix in PREFIXES:
        if type_.startswith(prefix):
            return BY_SNAKE.get(type_[len(prefix) :])
    return None


def resource_from_arguments(kind: Kind, args: dict[str, Any], origin: str) -> Resource:
    """aws_appmesh_* arguments (name, mesh_name, parent name, spec, tags) -> Resource."""
    unknown = sorted(set(args) - ALLOWED_ARGUMENTS)
    if unknown:
        raise TranslateError(f"{origin}: unsupported argument '{unknown[0]}'.")
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise TranslateError(f"{origin}: 'name' must be a non-empty string.")
    mesh = name if kind is MESH else args.get("mesh_name")
    if not isinstance(mesh, str) or not mesh:
        raise TranslateError(f"{origin}: 'mesh_name' must be a non-empty string.")
    parent = None
    if kind.parent:
        parent_arg = f"{camel_to_snake(kind.parent)}_name"
        parent = args.get(parent_arg)
        if not isinstance(parent, str) or not parent:
            raise TranslateError(f"{origin}: '{parent_arg}' must be a non-empty string.")
    try:
        spec = spec_to_api(kind.spec_shape, args.get("spec"), "spec", "terraform")
        tags = tags_to_map(args.get("tags"), "tags")
    except ShapeError as exc:
        raise TranslateError(f"{origin}: {exc}") from None
    return Resource(kind, mesh, name, spec, parent=parent, tags=tags, origin=origin)


# ---- state ---------------------------------------------------------------------------------


def from_state(path: Path, data: dict[str, Any]) -> list[Resource]:
    resources: list[Resource] = []
    if "values" in data or "format_version" in data:  # terraform show -json
        root = (data.get("values") or {}).get("root_module") or {}
        for address, type_, values in _show_json_resources(root):
            kind = kind_of(type_)
            if kind is not None:
                resources.append(_state_resource(kind, values, f"{path}: {address}"))
        return resources
    for entry in data.get("resources") or []:
        if entry.get("mode") != "managed":
            continue
        kind = kind_of(entry.get("type", ""))
        if kind is None:
            continue
        base = f"{entry['type']}.{entry['name']}"
        if entry.get("module"):
            base = f"{entry['module']}.{base}"
        for instance in entry.get("instances") or []:
            address = base
            if "index_key" in instance:
                key = instance["index_key"]
                address += f'["{key}"]' if isinstance(key, str) else f"[{key}]"
            values = instance.get("attributes") or {}
            resources.append(_state_resource(kind, values, f"{path}: {address}"))
    return resources


def _show_json_resources(module: dict[str, Any]):
    for entry in module.get("resources") or []:
        if entry.get("mode", "managed") == "managed":
            yield (
                entry.get("address", f"{entry['type']}.{entry['name']}"),
                entry["type"],
                (entry.get("values") or {}),
            )
    for child in module.get("child_modules") or []:
        yield from _show_json_resources(child)


def _state_resource(kind: Kind, values: dict[str, Any], origin: str) -> Resource:
    args = {k: v for k, v in values.items() if k in ALLOWED_ARGUMENTS}
    extra = sorted(k for k, v in values.items() if k not in ALLOWED_ARGUMENTS and v)
    if extra:
        raise TranslateError(f"{origin}: unsupported attribute '{extra[0]}'.")
    if not args.get("mesh_owner"):
        args.pop("mesh_owner", None)
    return resource_from_arguments(kind, args, origin)


# ---- configuration -------------------------------------------------------------------------


class _Config:
    """All .tf files of one module: resources by address, variables, locals."""

    def __init__(self, files: list[tuple[str, str]], parameters: dict[str, str]) -> None:
        self.resources: dict[tuple[str, str], tuple[str, hcl.Block]] = {}
        self.variables: dict[str, Any] = {}
        self.locals: dict[str, tuple[str, hcl.Attribute]] = {}
        self.parameters = parameters
        for file, text in files:
            try:
                body = hcl.parse(text)
            except hcl.HclError as exc:
                raise TranslateError(f"{file}: {exc}") from None
            for block in body:
                if not isinstance(block, hcl.Block):
                    continue
                if block.type == "resource" and len(block.labels) == 2:
                    self.resources[(block.labels[0], block.labels[1])] = (file, block)
                elif block.type == "variable" and block.labels:
                    default = block.attributes().get("default")
                    self.variables[block.labels[0]] = (file, default)
                elif block.type == "locals":
                    for name, attribute in block.attributes().items():
                        self.locals[name] = (file, attribute)
        self._resolving: set[str] = set()

    def resolver(self, origin: str) -> hcl.Resolver:
        def resolve(ref: hcl.Traversal) -> Any:
            text = str(ref)
            if text in self._resolving:
                raise TranslateError(f"{origin}: '{text}' refers to itself.")
            self._resolving.add(text)
            try:
                return self._resolve(ref, origin)
            finally:
                self._resolving.discard(text)

        return resolve

    def _resolve(self, ref: hcl.Traversal, origin: str) -> Any:
        parts = ref.parts
        head = parts[0]
        where = f"{origin} (line {ref.line})"
        if head == "var" and len(parts) >= 2:
            name = str(parts[1])
            if name in self.parameters:
                value = self.parameters[name]
            elif name in self.variables and self.variables[name][1] is not None:
                file, default = self.variables[name]
                value = hcl.evaluate(default.expr, self.resolver(f"{file}: variable.{name}"))
            else:
                raise TranslateError(
                    f"{where}: variable '{name}' has no default; pass --var {name}=VALUE."
                )
            return _index(value, parts[2:], where, ref)
        if head == "local" and len(parts) >= 2:
            name = str(parts[1])
            if name not in self.locals:
                raise TranslateError(f"{where}: local.{name} is not defined.")
            file, attribute = self.locals[name]
            value = hcl.evaluate(attribute.expr, self.resolver(f"{file}: local.{name}"))
            return _index(value, parts[2:], where, ref)
        if isinstance(head, str) and kind_of(head) is not None and len(parts) == 3:
            found = self.resources.get((head, str(parts[1])))
            if found is None:
                raise TranslateError(f"{where}: cannot resolve '{ref}': no such resource.")
            file, block = found
            attr = str(parts[2])
            target = f"{file}: {head}.{parts[1]}"
            if attr == "id" and kind_of(head) is MESH:
                attr = "name"  # a mesh's id is its name
            if attr not in NAME_ATTRIBUTES:
                raise TranslateError(
                    f"{where}: cannot resolve '{ref}': only {', '.join(NAME_ATTRIBUTES)} (and a "
                    "mesh's id) are known before the resource exists."
                )
            attribute = block.attributes().get(attr)
            if attribute is None:
                raise TranslateError(f"{where}: cannot resolve '{ref}': {target} has no {attr}.")
            return hcl.evaluate(attribute.expr, self.resolver(target))
        raise TranslateError(
            f"{where}: cannot resolve '{ref}': only other App Mesh resources' names, variables "
            "with defaults and locals can be resolved."
        )

    def load(self) -> list[Resource]:
        out = []
        for (type_, label), (file, block) in self.resources.items():
            kind = kind_of(type_)
            if kind is None:
                continue
            origin = f"{file}: {type_}.{label}"
            for meta in ("count", "for_each"):
                if meta in block.attributes():
                    raise TranslateError(f"{origin}: '{meta}' is not supported; expand it first.")
            try:
                args = hcl.body_value(
                    [i for i in block.body if getattr(i, "type", None) != "lifecycle"],
                    self.resolver(origin),
                )
            except hcl.HclError as exc:
                raise TranslateError(f"{origin}: {exc}") from None
            args.pop("depends_on", None)
            args.pop("provider", None)
            out.append(resource_from_arguments(kind, args, origin))
        return out


def _index(value: Any, rest: list[str | int], where: str, ref: hcl.Traversal) -> Any:
    for part in rest:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            raise TranslateError(f"{where}: cannot resolve '{ref}'.") from None
    return value


def from_config(files: list[Path], parameters: dict[str, str] | None = None) -> list[Resource]:
    return _Config([(str(f), f.read_text()) for f in files], parameters or {}).load()


def from_text(text: str, name: str = "<export>") -> list[Resource]:
    """Parse HCL held in memory (used to read back what export-terraform wrote)."""
    return _Config([(name, text)], {}).load()
