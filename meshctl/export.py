"""Write Terraform (meshplane_* or aws_appmesh_*) for every resource of a mesh.

Names that point at another resource of the mesh become attribute references
(`meshplane_virtual_node.orders.name`), so Terraform creates in the right order and a plan
after import shows no changes. Backends stay literal strings: a node calling a service that
routes back to it would otherwise be a reference cycle Terraform refuses.
"""

from __future__ import annotations

import re
from typing import Any

import botocore.model

from meshctl import hcl
from meshctl.model import (
    GATEWAY_ROUTE,
    MESH,
    ROUTE,
    VIRTUAL_GATEWAY,
    VIRTUAL_NODE,
    VIRTUAL_ROUTER,
    VIRTUAL_SERVICE,
    Kind,
    Resource,
    ordered,
)
from meshctl.shapes import TERRAFORM_MAP_LISTS, shape, terraform_name

PREFIXES = {"meshplane": "meshplane_", "aws": "aws_appmesh_"}


def _label(name: str) -> str:
    label = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    return label if re.match(r"[A-Za-z_]", label) else f"_{label}"


class _Writer:
    def __init__(self, resources: list[Resource], provider: str) -> None:
        self.prefix = PREFIXES[provider]
        self.resources = ordered(resources)
        self.labels: dict[tuple[str, ...], str] = {}
        taken: set[tuple[str, str]] = set()
        for r in self.resources:
            base = _label(f"{r.parent}_{r.name}" if r.parent else r.name)
            label, n = base, 2
            while (r.kind.key, label) in taken:
                label, n = f"{base}_{n}", n + 1
            taken.add((r.kind.key, label))
            self.labels[r.ident] = label

    def ref(self, kind: Kind, mesh: str, name: str, parent: str = "") -> hcl.Ref | str:
        label = self.labels.get((kind.key, mesh, parent, name))
        if label is None:
            return name  # not in this mesh's export: keep the literal
        return hcl.Ref(f"{self.prefix}{kind.snake}.{label}.name")

    def _reference(self, mesh: str, path: list[str], key: str, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if key == "virtualNodeName" and path[-2:] == ["provider", "virtualNode"]:
            return self.ref(VIRTUAL_NODE, mesh, value)
        if key == "virtualRouterName" and path[-2:] == ["provider", "virtualRouter"]:
            return self.ref(VIRTUAL_ROUTER, mesh, value)
        if key == "virtualNode" and path[-1:] == ["weightedTargets"]:
            return self.ref(VIRTUAL_NODE, mesh, value)
        if key == "virtualServiceName" and path[-2:] == ["target", "virtualService"]:
            return self.ref(VIRTUAL_SERVICE, mesh, value)
        return value

    def body(
        self, shape_: botocore.model.Shape, value: dict[str, Any], mesh: str, path: list[str]
    ) -> list[hcl.Attribute | hcl.Block]:
        items: list[hcl.Attribute | hcl.Block] = []
        for key, item in value.items():
            member = shape_.members[key]
            name = terraform_name(key)
            if key in TERRAFORM_MAP_LISTS and member.type_name == "list":
                items.append(hcl.Attribute(name, {kv["key"]: kv["value"] for kv in item}))
            elif member.type_name == "structure":
                items.append(hcl.Block(name, [], self.body(member, item, mesh, [*path, key])))
            elif member.type_name == "list" and member.member.type_name == "structure":
                for element in item:
                    body = self.body(member.member, element, mesh, [*path, key])
                    items.append(hcl.Block(name, [], body))
            else:
                items.append(hcl.Attribute(name, self._reference(mesh, path, key, item)))
        return items

    def resource(self, r: Resource) -> hcl.Block:
        body: list[hcl.Attribute | hcl.Block] = [hcl.Attribute("name", r.name)]
        if r.kind is not MESH:
            body.append(hcl.Attribute("mesh_name", self.ref(MESH, r.mesh, r.mesh)))
        if r.kind is ROUTE:
            parent = self.ref(VIRTUAL_ROUTER, r.mesh, r.parent or "")
            body.append(hcl.Attribute("virtual_router_name", parent))
        if r.kind is GATEWAY_ROUTE:
            parent = self.ref(VIRTUAL_GATEWAY, r.mesh, r.parent or "")
            body.append(hcl.Attribute("virtual_gateway_name", parent))
        spec_body = self.body(shape(r.kind.spec_shape), r.spec, r.mesh, [])
        body.append(hcl.Block("spec", [], spec_body))
        if r.tags:
            body.append(hcl.Attribute("tags", dict(sorted(r.tags.items()))))
        return hcl.Block("resource", [f"{self.prefix}{r.kind.snake}", self.labels[r.ident]], body)

    def import_block(self, r: Resource) -> hcl.Block:
        """`import { to, id }` (Terraform >= 1.5): plan adopts the existing object. Ids are
        the aws_appmesh_* ones: mesh, mesh/name, mesh/router-or-gateway/name."""
        ident = (
            "/".join(p for p in (r.mesh, r.parent, r.name) if p) if r.kind is not MESH else r.name
        )
        to = hcl.Ref(f"{self.prefix}{r.kind.snake}.{self.labels[r.ident]}")
        return hcl.Block("import", [], [hcl.Attribute("to", to), hcl.Attribute("id", ident)])

    def render(self, header: str, import_blocks: bool) -> str:
        blocks = []
        for r in self.resources:
            if import_blocks:
                blocks.append(hcl.render_block(self.import_block(r)))
            blocks.append(hcl.render_block(self.resource(r)))
        return header + "\n\n".join(blocks) + "\n"


def to_terraform(
    resources: list[Resource],
    provider: str = "meshplane",
    source: str = "",
    import_blocks: bool = False,
) -> str:
    """HCL for `resources`; with import_blocks, each preceded by an `import` block."""
    header = f"# Generated by meshctl export-terraform{f' from {source}' if source else ''}.\n\n"
    return _Writer(resources, provider).render(header, import_blocks)
