"""Meshes for the pipeline tests, written through the same service functions the APIs use."""

import copy
import dataclasses

from meshapi.demo import sample_mesh
from meshapi.models import Mesh
from meshapi.services import resources
from meshapi.services.kinds import KINDS, ROUTE

WRITER = resources.Writer(actor="test")
KIND_BY_SNAKE = {"".join("_" + c.lower() if c.isupper() else c for c in k.key): k for k in KINDS}


def apply(tenant, items: list[sample_mesh.Resource], mesh_name: str) -> Mesh:
    """Create each resource (in dependency order) in the tenant's mesh `mesh_name`."""
    for item in items:
        kind = KIND_BY_SNAKE[item.kind]
        parent = item.names.get(f"{kind.parent.key}Name", "") if kind.parent else ""
        resources.create(
            tenant,
            kind,
            WRITER,
            mesh_name=mesh_name,
            name=item.names.get(kind.name_field, mesh_name),
            spec=item.spec,
            parent_name=parent,
        )
    return Mesh.objects.get(tenant=tenant, name=mesh_name)


def shop(tenant, mesh_name: str = sample_mesh.MESH, eds: bool = False) -> Mesh:
    """The demo's mesh: frontend → catalog.shop.local (router catalog: catalog-v1 90 %,
    catalog-v2 10 %), gateway shop-gateway → frontend.shop.local. With `eds`, the catalog
    nodes have no DNS discovery: their callers reach them through endpoints (EDS)."""
    items = []
    for item in sample_mesh.RESOURCES:
        if eds and item.names.get("virtualNodeName", "").startswith("catalog"):
            spec = copy.deepcopy(item.spec)
            spec.pop("serviceDiscovery")
            item = dataclasses.replace(item, spec=spec)
        items.append(item)
    return apply(tenant, items, mesh_name)


def split(tenant, mesh_name: str, v1: int, v2: int, retries: int = 2) -> None:
    """UpdateRoute catalog/catalog-split to the given weights."""
    resources.update(
        tenant,
        ROUTE,
        WRITER,
        mesh_name=mesh_name,
        name=sample_mesh.ROUTE,
        parent_name=sample_mesh.ROUTER,
        spec=split_spec(v1, v2, retries),
    )


def split_spec(v1: int, v2: int, retries: int = 2) -> dict:
    return {
        "httpRoute": {
            "match": {"prefix": "/"},
            "action": {
                "weightedTargets": [
                    {"virtualNode": "catalog-v1", "weight": v1, "port": 8080},
                    {"virtualNode": "catalog-v2", "weight": v2, "port": 8080},
                ]
            },
            "retryPolicy": {
                "maxRetries": retries,
                "perRetryTimeout": {"unit": "ms", "value": 2000},
                "httpRetryEvents": ["server-error", "gateway-error"],
            },
        }
    }
