"""Endpoints of virtual nodes: static ones through the native API; registered ones when a
proxy's xDS stream opens (workers/xds/status.py calls `register`/`deregister`).

Every change is one transaction with the mesh revision bump and, for user writes, an
audit event; after commit the mesh compiles, which rebuilds only ClusterLoadAssignments
(EDS) of the proxies reaching the node: listeners, routes and clusters keep their versions.
"""

import ipaddress
import re

from django.db import IntegrityError, transaction
from django.db.models import F

from meshapi.models import Endpoint, Mesh, VirtualNode
from meshapi.services import resources
from meshapi.services.kinds import VIRTUAL_NODE
from meshapi.signals import mesh_changed
from tenants.models import AuditEvent, Tenant

# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.?)+$")


class EndpointError(Exception):
    """A request the caller can fix; `field` names the input, `status` the HTTP answer."""

    status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class EndpointNotFound(EndpointError):
    status = 404


class EndpointConflict(EndpointError):
    status = 409


def _lock_node(tenant: Tenant, mesh_name: str, node_name: str) -> VirtualNode:
    """The node, with its mesh row locked until commit (the lock every mesh write takes)."""
    mesh = Mesh.objects.select_for_update(no_key=True).filter(tenant=tenant, name=mesh_name).first()
    if mesh is None:
        raise EndpointNotFound("mesh", f"Mesh '{mesh_name}' not found.")
    node = VirtualNode.objects.filter(mesh=mesh, name=node_name).first()
    if node is None:
        raise EndpointNotFound(
            "virtualNode", f"Virtual node '{node_name}' not found in mesh '{mesh_name}'."
        )
    node.mesh = mesh
    return node


def _bump(mesh_id: int) -> None:
    Mesh.objects.filter(pk=mesh_id).update(revision=F("revision") + 1)

    def notify() -> None:
        revision = Mesh.objects.filter(pk=mesh_id).values_list("revision", flat=True).first()
        if revision is not None:
            mesh_changed.send(sender=Mesh, mesh_id=mesh_id, revision=revision)

    transaction.on_commit(notify)


def check_address(address: str) -> str:
    address = address.strip()
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    if not _HOSTNAME.match(address) or address.replace(".", "").isdigit():
        raise EndpointError(
            "address", f"address: '{address}' is neither an IP address nor a DNS host name."
        )
    return address.rstrip(".").lower()


def _check_port(node: VirtualNode, port: int) -> None:
    ports = sorted(
        {
            listener.get("portMapping", {}).get("port")
            for listener in node.spec.get("listeners") or []
            if listener.get("portMapping", {}).get("port") is not None
        }
    )
    if port not in ports:
        where = f"virtual node '{node.name}'"
        if not ports:
            raise EndpointError(
                "port", f"port: {where} has no listeners; add one before adding endpoints."
            )
        raise EndpointError(
            "port",
            f"port: {where} has no listener on port {port}; use one of "
            f"{', '.join(map(str, ports))}.",
        )


def _check_discovery(node: VirtualNode) -> None:
    if "dns" in (node.spec.get("serviceDiscovery") or {}):
        raise EndpointError(
            "virtualNode",
            f"Virtual node '{node.name}' is found through DNS (serviceDiscovery.dns), so its "
            "callers resolve its host name; static endpoints apply to nodes without "
            "serviceDiscovery or with awsCloudMap.",
        )


def as_dict(endpoint: Endpoint, node_name: str) -> dict:
    return {
        "virtualNodeName": node_name,
        "port": endpoint.port,
        "address": endpoint.address,
        "targetPort": endpoint.target_port,
        "source": endpoint.source,
        "health": endpoint.health,
        "instanceId": endpoint.instance_id,
    }


def _audit(tenant: Tenant, writer: resources.Writer, action: str, node: VirtualNode, before, after):
    AuditEvent.objects.create(
        tenant=tenant,
        actor=writer.actor,
        action=action,
        resource_type="endpoint",
        resource_arn=resources.arn_of(tenant, VIRTUAL_NODE, node),
        before=before,
        after=after,
        request_id=writer.request_id,
    )


def add_static(
    tenant: Tenant,
    writer: resources.Writer,
    *,
    mesh_name: str,
    node_name: str,
    port: int,
    address: str,
    health: str = Endpoint.Health.HEALTHY,
    instance_id: str = "",
    target_port: int | None = None,
) -> Endpoint:
    """Add a static endpoint to a node's listener port; `target_port` is where the address
    accepts its connections (default: the listener port itself)."""
    address = check_address(address)
    target_port = target_port or port
    if not 1 <= target_port <= 65535:
        raise EndpointError("targetPort", f"targetPort: {target_port} is not a port (1-65535).")
    with transaction.atomic():
        node = _lock_node(tenant, mesh_name, node_name)
        _check_discovery(node)
        _check_port(node, port)
        endpoint = Endpoint(
            tenant=tenant,
            mesh=node.mesh,
            virtual_node=node,
            port=port,
            target_port=target_port,
            address=address,
            source=Endpoint.Source.STATIC,
            health=health,
            instance_id=instance_id,
        )
        try:
            with transaction.atomic():
                endpoint.save()
        except IntegrityError as exc:
            target = f" (target port {target_port})" if target_port != port else ""
            raise EndpointConflict(
                "address",
                f"address: {address}:{port}{target} is already a static endpoint of virtual "
                f"node '{node_name}'.",
            ) from exc
        _bump(node.mesh_id)
        _audit(tenant, writer, "CreateStaticEndpoint", node, None, as_dict(endpoint, node.name))
    return endpoint


def remove_static(
    tenant: Tenant, writer: resources.Writer, *, mesh_name: str, node_name: str, endpoint_id: int
) -> None:
    """Delete a static endpoint; endpoints from other sources are not the user's to delete."""
    with transaction.atomic():
        node = _lock_node(tenant, mesh_name, node_name)
        endpoint = Endpoint.objects.filter(virtual_node=node, pk=endpoint_id).first()
        if endpoint is None:
            raise EndpointNotFound(
                "id", f"Endpoint {endpoint_id} not found on virtual node '{node_name}'."
            )
        if endpoint.source != Endpoint.Source.STATIC:
            raise EndpointConflict(
                "source",
                f"Endpoint {endpoint_id} is {endpoint.source}, not static: it goes away when "
                "its source stops reporting it.",
            )
        before = as_dict(endpoint, node.name)
        endpoint.delete()
        _bump(node.mesh_id)
        _audit(tenant, writer, "DeleteStaticEndpoint", node, before, None)


def register(
    tenant: Tenant,
    *,
    mesh_name: str,
    node_name: str,
    port: int,
    address: str,
    instance_id: str = "",
    health: str = Endpoint.Health.HEALTHY,
    target_port: int | None = None,
) -> bool:
    """A proxy announced itself (its xDS stream opened): it serves the node's listener
    `port` at `address`:`target_port` (default: the listener port). The same instance's
    earlier target for that port (it restarted on other ports) is replaced. True if
    anything changed."""
    address = check_address(address)
    target_port = target_port or port
    with transaction.atomic():
        node = _lock_node(tenant, mesh_name, node_name)
        moved = 0
        if instance_id:
            moved, _ = (
                Endpoint.objects.filter(
                    virtual_node=node,
                    port=port,
                    address=address,
                    source=Endpoint.Source.REGISTERED,
                    instance_id=instance_id,
                )
                .exclude(target_port=target_port)
                .delete()
            )
        endpoint, created = Endpoint.objects.get_or_create(
            virtual_node=node,
            port=port,
            address=address,
            target_port=target_port,
            source=Endpoint.Source.REGISTERED,
            defaults={
                "tenant": tenant,
                "mesh": node.mesh,
                "instance_id": instance_id,
                "health": health,
            },
        )
        if (
            not created
            and not moved
            and (endpoint.health, endpoint.instance_id)
            == (
                health,
                instance_id,
            )
        ):
            return False
        if not created:
            endpoint.health, endpoint.instance_id = health, instance_id
            endpoint.save(update_fields=["health", "instance_id", "updated_at"])
        _bump(node.mesh_id)
    return True


def deregister(
    tenant: Tenant,
    *,
    mesh_name: str,
    node_name: str,
    port: int,
    address: str,
    target_port: int | None = None,
    instance_id: str | None = None,
) -> bool:
    """A proxy's stream closed for good. True if an endpoint was removed. With
    `instance_id`, only that instance's registration: another instance that registered the
    same address and port meanwhile keeps its endpoint."""
    with transaction.atomic():
        node = _lock_node(tenant, mesh_name, node_name)
        rows = Endpoint.objects.filter(
            virtual_node=node,
            port=port,
            address=address,
            target_port=target_port or port,
            source=Endpoint.Source.REGISTERED,
        )
        if instance_id is not None:
            rows = rows.filter(instance_id=instance_id)
        deleted, _ = rows.delete()
        if deleted:
            _bump(node.mesh_id)
    return bool(deleted)
