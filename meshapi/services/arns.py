"""ARNs in App Mesh's layout: arn:aws:appmesh:<region>:<account>:mesh/<m>/virtualNode/<n>."""

from dataclasses import dataclass

from meshapi.appmesh.errors import BadRequest
from meshapi.services.kinds import BY_KEY, MESH, Kind


@dataclass(frozen=True)
class ResourcePath:
    kind: Kind
    mesh_name: str
    name: str
    parent_name: str = ""


def build(region: str, account_id: str, path: ResourcePath) -> str:
    resource = f"mesh/{path.mesh_name}"
    if path.kind is not MESH:
        if path.kind.parent is not None:
            resource += f"/{path.kind.parent.key}/{path.parent_name}"
        resource += f"/{path.kind.key}/{path.name}"
    return f"arn:aws:appmesh:{region}:{account_id}:{resource}"


def parse(arn: str, field: str = "resourceArn") -> tuple[str, str, ResourcePath]:
    """Split an ARN into (region, account id, resource path)."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "appmesh":
        raise BadRequest(f"{field}: '{arn}' is not an App Mesh resource ARN.")
    region, account, resource = parts[3], parts[4], parts[5].split("/")
    bad = BadRequest(f"{field}: '{arn}' does not name an App Mesh resource.")
    if len(resource) < 2 or resource[0] != "mesh" or not all(resource):
        raise bad
    mesh_name = resource[1]
    if len(resource) == 2:
        return region, account, ResourcePath(MESH, mesh_name, mesh_name)
    kind = BY_KEY.get(resource[2])
    if kind is None or kind is MESH:
        raise bad
    if len(resource) == 4 and kind.parent is None:
        return region, account, ResourcePath(kind, mesh_name, resource[3])
    if len(resource) == 6:
        child = BY_KEY.get(resource[4])
        if child is not None and child.parent is kind:
            return region, account, ResourcePath(child, mesh_name, resource[5], resource[3])
    raise bad
