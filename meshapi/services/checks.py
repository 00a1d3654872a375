"""Checks the botocore shapes cannot express: references that must exist when written,
one-of choices the model leaves open, and per-tenant quotas on spec contents."""

from typing import Any

from django.db.models import Model

from meshapi.appmesh.errors import BadRequest, LimitExceeded, NotFound
from meshapi.models import VirtualNode, VirtualRouter, VirtualService
from meshapi.services.kinds import (
    GATEWAY_ROUTE,
    ROUTE,
    VIRTUAL_NODE,
    VIRTUAL_SERVICE,
    Kind,
)

ROUTE_TYPES = ("httpRoute", "http2Route", "grpcRoute", "tcpRoute")
GATEWAY_ROUTE_TYPES = ("httpRoute", "http2Route", "grpcRoute")


def check_spec(kind: Kind, mesh: Model, spec: dict[str, Any], quotas: dict[str, int]) -> None:
    if kind is VIRTUAL_NODE:
        _check_node(spec, quotas)
    elif kind is VIRTUAL_SERVICE:
        _check_service(mesh, spec)
    elif kind is ROUTE:
        _check_route(mesh, spec, quotas)
    elif kind is GATEWAY_ROUTE:
        _check_gateway_route(mesh, spec)


def _one_of(spec: dict, options: tuple[str, ...]) -> str:
    present = [k for k in options if spec.get(k) is not None]
    if len(present) != 1:
        raise BadRequest(f"spec: set exactly one of {', '.join(options)}.")
    return present[0]


def _check_node(spec: dict, quotas: dict[str, int]) -> None:
    for field, quota in (
        ("backends", "backends_per_virtual_node"),
        ("listeners", "listeners_per_virtual_node"),
    ):
        if len(spec.get(field) or []) > quotas[quota]:
            raise LimitExceeded(f"spec.{field}: at most {quotas[quota]} allowed (quota '{quota}').")


def _check_service(mesh: Model, spec: dict) -> None:
    provider = spec.get("provider")
    if not provider:
        return
    if "virtualNode" in provider:
        name = provider["virtualNode"]["virtualNodeName"]
        if not VirtualNode.objects.filter(mesh=mesh, name=name).exists():
            raise NotFound(
                f"spec.provider.virtualNode.virtualNodeName: virtual node '{name}' does not "
                f"exist in mesh '{mesh.name}'."
            )
    elif "virtualRouter" in provider:
        name = provider["virtualRouter"]["virtualRouterName"]
        if not VirtualRouter.objects.filter(mesh=mesh, name=name).exists():
            raise NotFound(
                f"spec.provider.virtualRouter.virtualRouterName: virtual router '{name}' does "
                f"not exist in mesh '{mesh.name}'."
            )


def _check_route(mesh: Model, spec: dict, quotas: dict[str, int]) -> None:
    route_type = _one_of(spec, ROUTE_TYPES)
    targets = spec[route_type]["action"]["weightedTargets"]
    path = f"spec.{route_type}.action.weightedTargets"
    limit = quotas["weighted_targets_per_route"]
    if len(targets) > limit:
        raise LimitExceeded(
            f"{path}: at most {limit} allowed (quota 'weighted_targets_per_route')."
        )
    wanted = {t["virtualNode"] for t in targets}
    found = set(
        VirtualNode.objects.filter(mesh=mesh, name__in=wanted).values_list("name", flat=True)
    )
    for i, target in enumerate(targets):
        if target["virtualNode"] not in found:
            raise NotFound(
                f"{path}[{i}].virtualNode: virtual node '{target['virtualNode']}' does not exist "
                f"in mesh '{mesh.name}'."
            )


def gateway_route_target(spec: dict) -> str | None:
    for route_type in GATEWAY_ROUTE_TYPES:
        route = spec.get(route_type)
        if route:
            return route["action"]["target"]["virtualService"]["virtualServiceName"]
    return None


def _check_gateway_route(mesh: Model, spec: dict) -> None:
    route_type = _one_of(spec, GATEWAY_ROUTE_TYPES)
    name = gateway_route_target(spec)
    if not VirtualService.objects.filter(mesh=mesh, name=name).exists():
        raise NotFound(
            f"spec.{route_type}.action.target.virtualService.virtualServiceName: virtual service "
            f"'{name}' does not exist in mesh '{mesh.name}'."
        )
