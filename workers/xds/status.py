"""Status of connected proxies: instances, their ACKs and NACKs, connection history, and
the endpoints a proxy registers by connecting.

The stream code reports ACKs and NACKs on the event loop (`InstanceReporter`); the
`StatusRecorder` writes them from a thread in small batches (an ACK storm after a push to
1,000 proxies is a few bulk statements, not 4,000 round trips, and the loop never waits on
the database). Every write is conditional on the stream still owning the instance row, so
a proxy that reconnected elsewhere is never marked by its old stream.

Endpoint registration: a virtual node's proxy registers its address on the node's listener
ports when its stream opens (source `registered`), and is deregistered a grace period
after the stream closes, unless the instance reconnected meanwhile (on any replica): a
control-plane restart or a proxy's reconnect does not churn endpoints. A redirected proxy
is reached at the listener port itself (iptables hands it to Envoy); an explicit-mode one
at its own ingress listener for that port (the declared ingress port + the listener's
index in port order, as the compiler numbers them), so the endpoint's target port differs
from the listener port it serves.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.db import close_old_connections, transaction
from django.utils import timezone

from workers.xds.auth import Identity
from workers.xds.cache import TYPES  # the types a stream reports ACKs of

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.25  # gather an ACK burst into one write


@dataclass
class Declared:
    """What the proxy declared in node.metadata (and where it connected from)."""

    consumer: str
    interception: str
    instance_id: str
    address: str
    ports: list[int]
    # (app, ingress, egress) an explicit-mode proxy declared, 0 = default; (0, 0, 0) when
    # redirected. Part of the variant it is served.
    variant_ports: tuple[int, int, int] = (0, 0, 0)


@dataclass(slots=True)
class InstanceReporter:
    """ACK/NACK sink of one stream (see sotw.Reporter)."""

    recorder: StatusRecorder
    instance_pk: int
    stream: str
    acks: dict[str, str] = field(default_factory=dict)
    last_nack: dict | None = None

    def acked(self, type_url: str, version: str) -> None:
        if self.acks.get(type_url) != version:
            self.acks[type_url] = version
            self.recorder.mark(self)

    def nacked(self, type_url: str, version: str, message: str) -> None:
        self.last_nack = {
            "typeUrl": type_url,
            "version": version,
            "errorDetail": message,
            "at": timezone.now().isoformat(),
        }
        log.warning(
            "xds: instance %s NACKed %s %s: %s", self.instance_pk, type_url, version, message
        )
        self.recorder.mark(self)


# ------------------------------------------------------------------ database (threads)


def _listener_ports(node) -> list[int]:
    from workers.compiler.graph import listener_ports

    return list(listener_ports(node.spec.get("listeners") or ()))


def registrable_ports(identity: Identity, declared: Declared) -> list[tuple[int, int]]:
    """(listener port, target port) for each port this instance serves its node on, if
    callers find it through us (nodes found by DNS are reached through their host name;
    gateways are not called in-mesh). Redirect: the listener ports the proxy intercepts
    (all of them unless it declared `ports`), each its own target; so does a proxyless gRPC
    app (it serves its listener ports itself). Explicit Envoy: every listener port (the
    compiler gives each an ingress listener), at that ingress listener's port."""
    from meshapi.models import VirtualNode
    from workers.compiler.context import REDIRECT_INGRESS_PORT
    from workers.compiler.graph import explicit_ingress_ports

    if identity.kind != "virtualNode" or not declared.address:
        return []
    node = VirtualNode.objects.filter(
        mesh__tenant_id=identity.tenant_id, mesh__name=identity.mesh, name=identity.name
    ).first()
    if node is None or "dns" in (node.spec.get("serviceDiscovery") or {}):
        return []
    ports = _listener_ports(node)
    if declared.interception == "explicit" and declared.consumer == "envoy":
        return explicit_ingress_ports(declared.variant_ports[1] or REDIRECT_INGRESS_PORT, ports)
    if declared.ports:
        ports = [p for p in ports if p in declared.ports]
    return [(port, port) for port in ports]


def open_instance(
    identity: Identity, declared: Declared, replica: str, stream: str, protocol: str
) -> int:
    """Record the stream: the instance row (connected, owned by this stream) and history."""
    from meshapi.models import Mesh, ProxyConnection, ProxyInstance
    from meshapi.models.instances import CONNECTIONS_KEPT

    close_old_connections()
    now = timezone.now()
    mesh = Mesh.objects.get(tenant_id=identity.tenant_id, name=identity.mesh)
    with transaction.atomic():
        instance, _ = ProxyInstance.objects.select_for_update().get_or_create(
            mesh=mesh,
            kind=identity.kind,
            name=identity.name,
            instance_id=declared.instance_id,
            defaults={"tenant_id": identity.tenant_id},
        )
        instance.address = declared.address
        instance.ports = declared.ports
        instance.consumer = declared.consumer
        instance.interception = declared.interception
        instance.app_port, instance.ingress_port, instance.egress_port = declared.variant_ports
        instance.replica = replica
        instance.stream = stream
        instance.connected_since = now
        instance.disconnected_at = None
        instance.acked = {}
        instance.save()
        ProxyConnection.objects.create(
            instance=instance,
            stream=stream,
            replica=replica,
            protocol=protocol,
            peer=identity.peer,
            opened_at=now,
        )
        old = list(instance.connections.values_list("pk", flat=True)[CONNECTIONS_KEPT:])
        if old:
            ProxyConnection.objects.filter(pk__in=old).delete()
    return instance.pk


def register_instance(identity: Identity, declared: Declared) -> None:
    """Register the instance's address on the node's ports (source `registered`), each at
    the port it accepts them on."""
    from meshapi.services import endpoints
    from tenants.models import Tenant

    close_old_connections()
    tenant = Tenant.objects.get(pk=identity.tenant_id)
    for port, target in registrable_ports(identity, declared):
        try:
            endpoints.register(
                tenant,
                mesh_name=identity.mesh,
                node_name=identity.name,
                port=port,
                address=declared.address,
                instance_id=declared.instance_id,
                target_port=target,
            )
        except endpoints.EndpointError as exc:
            log.warning("xds: not registering %s:%s: %s", declared.address, target, exc.message)


def close_instance(instance_pk: int, stream: str) -> bool:
    """Mark the stream closed; True if it still owned the instance (now disconnected)."""
    from meshapi.models import ProxyConnection, ProxyInstance

    close_old_connections()
    now = timezone.now()
    ProxyConnection.objects.filter(instance_id=instance_pk, stream=stream).update(closed_at=now)
    return bool(
        ProxyInstance.objects.filter(pk=instance_pk, stream=stream).update(disconnected_at=now)
    )


def deregister_if_gone(
    identity: Identity, declared: Declared, instance_pk: int, stream: str
) -> None:
    """After the grace period: deregister unless the instance came back (any replica).
    Only this instance's registrations go, and the check holds the instance row until they
    are gone, so a reconnect that races it waits and registers afresh."""
    from meshapi.models import Mesh, ProxyInstance
    from meshapi.services import endpoints
    from tenants.models import Tenant

    close_old_connections()
    tenant = Tenant.objects.get(pk=identity.tenant_id)
    ports = registrable_ports(identity, declared)
    with transaction.atomic():
        # The mesh first, then the instance: the order the reaper's sweep locks them in.
        Mesh.objects.select_for_update(no_key=True).filter(
            tenant_id=identity.tenant_id, name=identity.mesh
        ).first()
        still_gone = (
            ProxyInstance.objects.select_for_update()
            .filter(pk=instance_pk, stream=stream, disconnected_at__isnull=False)
            .exists()
        )
        if not still_gone:
            return
        for port, target in ports:
            try:
                endpoints.deregister(
                    tenant,
                    mesh_name=identity.mesh,
                    node_name=identity.name,
                    port=port,
                    address=declared.address,
                    target_port=target,
                    instance_id=declared.instance_id,
                )
            except endpoints.EndpointError:
                return  # the node or mesh is gone, and its endpoints with it


# {type URL: version} rebuilt from a column per type (NULL: not acknowledged yet).
_ACKED_SQL = (
    "UPDATE {table} AS i SET acked = jsonb_strip_nulls(jsonb_build_object("
    + ", ".join(f"%b::text, v.t{i}" for i in range(len(TYPES)))
    + ")), updated_at = %b FROM unnest(%b::bigint[], %b::text[], "
    + ", ".join("%b::text[]" for _ in TYPES)
    + ") AS v(id, stream, "
    + ", ".join(f"t{i}" for i in range(len(TYPES)))
    + ") WHERE i.id = v.id AND i.stream = v.stream"
)


def write_status(items: list[tuple[int, str, dict, dict | None]]) -> None:
    """The ACK/NACK status of a batch of instances, each row only while the reporting
    stream still owns it. On PostgreSQL the ACK-only rows (an ACK burst after a push to
    1,000 proxies) are one `UPDATE … FROM unnest(…)` over binary arrays, a column of
    versions per type, so nothing is quoted or encoded per row in Python (a JSON document
    of the batch cost ~3 µs per instance; Django's `Case(When…)` per row, then a
    statement per row, led the push path's CPU before that)."""
    import json

    from django.db import connection

    from meshapi.models import ProxyInstance

    close_old_connections()
    now = timezone.now()
    table = connection.ops.quote_name(ProxyInstance._meta.db_table)
    postgres = connection.vendor == "postgresql"
    cast = "::jsonb" if postgres else ""
    acks_only, with_nack = [], []
    for instance_pk, stream, acks, last_nack in items:
        if last_nack is None:
            acks_only.append((instance_pk, stream, acks))
        else:
            with_nack.append((json.dumps(acks), json.dumps(last_nack), now, instance_pk, stream))
    if acks_only and postgres:
        from meshapi.services.sql import binary_cursor

        with binary_cursor() as cursor:
            cursor.execute(
                _ACKED_SQL.format(table=table),
                [
                    *TYPES,
                    now,
                    [pk for pk, _, _ in acks_only],
                    [stream for _, stream, _ in acks_only],
                    *([acks.get(t) for _, _, acks in acks_only] for t in TYPES),
                ],
            )
    with connection.cursor() as cursor:
        if acks_only and not postgres:
            cursor.executemany(
                f"UPDATE {table} SET acked = %s, updated_at = %s WHERE id = %s AND stream = %s",
                [(json.dumps(acks), now, pk, stream) for pk, stream, acks in acks_only],
            )
        if with_nack:
            cursor.executemany(
                f"UPDATE {table} SET acked = %s{cast}, last_nack = %s{cast}, updated_at = %s "
                "WHERE id = %s AND stream = %s",
                with_nack,
            )


# ------------------------------------------------------------------ the recorder (loop)


class StatusRecorder:
    def __init__(self, replica: str, grace_seconds: float) -> None:
        self.replica = replica
        self.grace_seconds = grace_seconds
        self._dirty: dict[int, InstanceReporter] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    def mark(self, reporter: InstanceReporter) -> None:
        self._dirty[reporter.instance_pk] = reporter
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(FLUSH_SECONDS)  # gather the rest of an ACK burst
            await self.flush()

    async def flush(self) -> None:
        batch, self._dirty = self._dirty, {}
        if not batch:
            return
        items = [(r.instance_pk, r.stream, dict(r.acks), r.last_nack) for r in batch.values()]
        try:
            await sync_to_async(write_status, thread_sensitive=False)(items)
        except Exception:  # noqa: BLE001 - status is advisory; the next ACK writes again
            log.warning("xds: writing status of %d instances failed", len(items), exc_info=True)

    async def open(
        self, identity: Identity, declared: Declared, stream: str, protocol: str
    ) -> InstanceReporter:
        pk = await sync_to_async(open_instance, thread_sensitive=False)(
            identity, declared, self.replica, stream, protocol
        )
        # Registering bumps the mesh and enqueues a compile: the stream need not wait.
        self._spawn(self._register(identity, declared))
        return InstanceReporter(self, pk, stream)

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _register(self, identity: Identity, declared: Declared) -> None:
        try:
            await sync_to_async(register_instance, thread_sensitive=False)(identity, declared)
        except Exception:  # noqa: BLE001 - the stream serves anyway; the next open retries
            log.warning("xds: registering %s failed", identity.node_id, exc_info=True)

    async def close(
        self, identity: Identity, declared: Declared, reporter: InstanceReporter
    ) -> None:
        if reporter.instance_pk in self._dirty:
            await self.flush()
        try:
            owned = await sync_to_async(close_instance, thread_sensitive=False)(
                reporter.instance_pk, reporter.stream
            )
        except Exception:  # noqa: BLE001
            log.warning("xds: recording a closed stream failed", exc_info=True)
            return
        if owned:
            self._spawn(self._deregister_later(identity, declared, reporter))

    async def _deregister_later(
        self, identity: Identity, declared: Declared, reporter: InstanceReporter
    ) -> None:
        await asyncio.sleep(self.grace_seconds)
        try:
            await sync_to_async(deregister_if_gone, thread_sensitive=False)(
                identity, declared, reporter.instance_pk, reporter.stream
            )
        except Exception:  # noqa: BLE001
            log.warning("xds: deregistering %s failed", identity.node_id, exc_info=True)
