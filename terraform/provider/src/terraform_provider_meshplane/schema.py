"""Resource and data source schemas, derived from botocore's App Mesh model.

The `spec` of every `meshplane_*` resource is built by walking the API's spec shape, the
way the AWS provider shaped `aws_appmesh_*`: members in snake_case; a structure is a
single nested block; a list of structures is a list block named in the singular
(`listeners` -> `listener`, `weightedTargets` -> `weighted_target`); a list of scalars is
a set attribute; `awsCloudMap.attributes` is a map. Deriving the schema from the model
keeps every one of the API's fields reachable without retyping hundreds of shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from botocore.loaders import Loader
from botocore.model import ServiceModel, Shape

SINGLE = "single"
LIST = "list"

_SCALARS = {"string": "string", "integer": "number", "long": "number", "boolean": "bool"}
_MAP_LISTS = {"AwsCloudMapInstanceAttributes"}  # [{key, value}] in the API, a map here


def snake(name: str) -> str:
    """`virtualNodeName` -> `virtual_node_name`, `http2Route` -> `http2_route`."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def singular(name: str) -> str:
    return name[:-1] if name.endswith("s") else name


@dataclass
class Attribute:
    name: str
    type: Any  # cty type JSON
    api: str | None = None  # member name in the API, None for our own attributes
    shape: Shape | None = None
    required: bool = False
    optional: bool = False
    computed: bool = False
    sensitive: bool = False
    description: str = ""


@dataclass
class BlockType:
    name: str
    nesting: str
    block: Block
    api: str
    min_items: int = 0
    max_items: int = 0


@dataclass
class Block:
    attributes: list[Attribute] = field(default_factory=list)
    blocks: list[BlockType] = field(default_factory=list)
    description: str = ""

    def value_type(self) -> Any:
        """The cty object type of one instance of this block."""
        types: dict[str, Any] = {a.name: a.type for a in self.attributes}
        for b in self.blocks:
            inner = b.block.value_type()
            types[b.name] = inner if b.nesting == SINGLE else ["list", inner]
        return ["object", types]

    def attribute(self, name: str) -> Attribute | None:
        return next((a for a in self.attributes if a.name == name), None)

    def block(self, name: str) -> BlockType | None:
        return next((b for b in self.blocks if b.name == name), None)


@cache
def service_model() -> ServiceModel:
    # The loader alone, not a botocore session: a third of the import time, and the plugin's
    # start time is paid on every Terraform command.
    return ServiceModel(Loader().load_service_model("appmesh", "service-2"), "appmesh")


def spec_block(shape: Shape) -> Block:
    """The Terraform block for an API structure shape (recursively)."""
    block = Block()
    required = set(shape.required_members)
    for member, mshape in shape.members.items():
        name = snake(member)
        if mshape.type_name == "structure":
            block.blocks.append(
                BlockType(
                    name,
                    SINGLE,
                    spec_block(mshape),
                    member,
                    min_items=1 if member in required else 0,
                )
            )
        elif mshape.type_name == "list" and mshape.name in _MAP_LISTS:
            block.attributes.append(
                Attribute(name, ["map", "string"], member, mshape, optional=True)
            )
        elif mshape.type_name == "list" and mshape.member.type_name == "structure":
            block.blocks.append(
                BlockType(
                    singular(name),
                    LIST,
                    spec_block(mshape.member),
                    member,
                    max_items=mshape.metadata.get("max", 0),
                )
            )
        elif mshape.type_name == "list":
            block.attributes.append(
                Attribute(
                    name,
                    ["set", _SCALARS[mshape.member.type_name]],
                    member,
                    mshape,
                    required=member in required,
                    optional=member not in required,
                )
            )
        else:
            block.attributes.append(
                Attribute(
                    name,
                    _SCALARS[mshape.type_name],
                    member,
                    mshape,
                    required=member in required,
                    optional=member not in required,
                )
            )
    return block


@dataclass(frozen=True)
class Kind:
    """One App Mesh resource kind as a Terraform resource type."""

    type_name: str  # meshplane_virtual_node
    api: str  # VirtualNode (operation suffix)
    output: str  # virtualNode (response member)
    name_param: str  # virtualNodeName
    parent: tuple[str, str] | None = None  # (tf attribute, API parameter) of router/gateway

    @property
    def in_mesh(self) -> bool:
        return self.api != "Mesh"

    def id_parts(self) -> list[str]:
        """Terraform attributes that make the import id, in order (`mesh/router/route`)."""
        parts = ["mesh_name"] if self.in_mesh else []
        if self.parent:
            parts.append(self.parent[0])
        return [*parts, "name"]

    def identity(self, value: dict[str, Any]) -> dict[str, Any]:
        """API parameters naming the resource, from a Terraform value."""
        params = {self.name_param: value["name"]}
        if self.in_mesh:
            params["meshName"] = value["mesh_name"]
            if isinstance(value.get("mesh_owner"), str) and value["mesh_owner"]:
                params["meshOwner"] = value["mesh_owner"]
        if self.parent:
            params[self.parent[1]] = value[self.parent[0]]
        return params

    def spec_shape(self) -> Shape:
        return service_model().operation_model(f"Create{self.api}").input_shape.members["spec"]


KINDS: dict[str, Kind] = {
    k.type_name: k
    for k in [
        Kind("meshplane_mesh", "Mesh", "mesh", "meshName"),
        Kind("meshplane_virtual_node", "VirtualNode", "virtualNode", "virtualNodeName"),
        Kind("meshplane_virtual_service", "VirtualService", "virtualService", "virtualServiceName"),
        Kind("meshplane_virtual_router", "VirtualRouter", "virtualRouter", "virtualRouterName"),
        Kind(
            "meshplane_route",
            "Route",
            "route",
            "routeName",
            ("virtual_router_name", "virtualRouterName"),
        ),
        Kind(
            "meshplane_virtual_gateway",
            "VirtualGateway",
            "virtualGateway",
            "virtualGatewayName",
        ),
        Kind(
            "meshplane_gateway_route",
            "GatewayRoute",
            "gatewayRoute",
            "gatewayRouteName",
            ("virtual_gateway_name", "virtualGatewayName"),
        ),
    ]
}

# Attributes the server sets; never in configuration.
COMPUTED = ["id", "arn", "created_date", "last_updated_date", "resource_owner", "version"]
# Attributes that name the resource: changing one replaces it.
IDENTIFYING = ["name", "mesh_name", "mesh_owner", "virtual_router_name", "virtual_gateway_name"]


def _computed_attributes() -> list[Attribute]:
    return [
        Attribute("id", "string", computed=True, description="The resource's unique id."),
        Attribute("arn", "string", computed=True, description="The resource's ARN."),
        Attribute("created_date", "string", computed=True),
        Attribute("last_updated_date", "string", computed=True),
        Attribute("resource_owner", "string", computed=True),
        Attribute(
            "version",
            "number",
            computed=True,
            description="metadata.version: bumped by every update.",
        ),
    ]


def _naming_attributes(kind: Kind) -> list[Attribute]:
    attrs = [Attribute("name", "string", required=True)]
    if kind.in_mesh:
        attrs.append(Attribute("mesh_name", "string", required=True))
        attrs.append(Attribute("mesh_owner", "string", optional=True, computed=True))
    if kind.parent:
        attrs.append(Attribute(kind.parent[0], "string", required=True))
    return attrs


@cache
def resource_schema(type_name: str) -> Block:
    kind = KINDS[type_name]
    spec = spec_block(kind.spec_shape())
    block = Block(
        attributes=[
            *_naming_attributes(kind),
            *_computed_attributes(),
            Attribute("tags", ["map", "string"], optional=True),
        ],
        blocks=[BlockType("spec", SINGLE, spec, "spec", min_items=1 if kind.in_mesh else 0)],
    )
    return block


@cache
def data_source_schema(type_name: str) -> Block:
    """The same object as the resource, with `spec` and `tags` read-only attributes."""
    kind = KINDS[type_name]
    spec = resource_schema(type_name).block("spec").block
    return Block(
        attributes=[
            *_naming_attributes(kind),
            *_computed_attributes(),
            Attribute("tags", ["map", "string"], computed=True),
            Attribute("spec", spec.value_type(), computed=True),
        ]
    )


PROVIDER = Block(
    attributes=[
        Attribute(
            "endpoint",
            "string",
            optional=True,
            description="Meshplane's App Mesh API URL (or MESHPLANE_ENDPOINT, or the "
            "profile's endpoint_url).",
        ),
        Attribute(
            "access_key_id",
            "string",
            optional=True,
            description="Access key id (or MESHPLANE_ACCESS_KEY_ID, or the profile's).",
        ),
        Attribute(
            "secret_access_key",
            "string",
            optional=True,
            sensitive=True,
            description="Secret access key (or MESHPLANE_SECRET_ACCESS_KEY, or the profile's).",
        ),
        Attribute(
            "region",
            "string",
            optional=True,
            description="Region to sign for (or MESHPLANE_REGION, or the profile's; "
            "default us-east-1).",
        ),
        Attribute(
            "profile",
            "string",
            optional=True,
            description="A profile in the AWS shared config/credentials files "
            "(or MESHPLANE_PROFILE).",
        ),
    ]
)
