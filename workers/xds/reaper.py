"""Replica heartbeats, the reaping of instances a dead replica left connected, and the
sweep of endpoints a stopped replica left registered.

A replica that exits cleanly closes its streams, and each closed stream deregisters its
instance after the grace period. A replica that dies (SIGKILL, a lost host) closes nothing:
its instances stay connected in the status and their `registered` endpoints stay in the
mesh until each proxy reconnects elsewhere. So every replica writes a heartbeat (a Redis
key per replica holding the time of its last beat, refreshed every `heartbeat` seconds),
and periodically looks at the replicas that own connected instances: one whose last beat
is older than `dead_after` plus the grace period is dead, and each of its instances is
marked disconnected (only while that stream still owns it: a proxy that reconnected to
another replica is left alone) and deregistered, as its own close would have done. Every
replica does this; the compare-and-set makes it happen once.

A replica that stops cleanly leaves its last beat: its streams were closed, so it owns
nothing connected. A replica never seen beating (a Redis that lost its keys, an older
replica) is not reaped: an unknown is not a death. Without REDIS_URL (the embedded mode:
one process) there is no heartbeat and nothing to reap.

A clean stop also drops the deregistrations still waiting out the grace period: those
instances are disconnected, yet keep their `registered` endpoints. So each pass, every
replica (embedded mode too: this needs only the database) also sweeps: a `registered`
endpoint whose instance (by instance id) has been disconnected for longer than
`dead_after` plus the grace period is deregistered, under a lock on the instance's row
and only while it is still disconnected since then (a proxy that reconnected keeps it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

log = logging.getLogger(__name__)

PREFIX = "meshplane:xds:replica:"
KEPT_SECONDS = 7 * 24 * 3600  # how long a silent replica's last beat stays readable


def _seconds(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {value!r}.") from None
    if seconds <= 0:
        raise ValueError(f"{name} must be positive, not {value!r}.")
    return seconds


HEARTBEAT_SECONDS = _seconds("MESHPLANE_XDS_HEARTBEAT_SECONDS", 5.0)
DEAD_AFTER_SECONDS = _seconds("MESHPLANE_XDS_DEAD_AFTER_SECONDS", 30.0)


def _redis():
    from workers.publish import redis_client

    return redis_client(settings.REDIS_URL) if settings.REDIS_URL else None


def beat(replica: str) -> None:
    """Record that `replica` is alive now."""
    client = _redis()
    if client is not None:
        client.set(PREFIX + replica, repr(time.time()), ex=KEPT_SECONDS)


def dead_replicas(me: str, bound: float) -> list[str]:
    """Replicas owning connected instances whose last beat is older than `bound` seconds."""
    from meshapi.models import ProxyInstance

    client = _redis()
    if client is None:
        return []
    close_old_connections()
    owners = sorted(
        set(
            ProxyInstance.objects.filter(disconnected_at__isnull=True)
            .exclude(replica__in=("", me))
            .values_list("replica", flat=True)
            .distinct()
        )
    )
    if not owners:
        return []
    beats = client.mget([PREFIX + name for name in owners])
    now = time.time()
    dead = []
    for name, last in zip(owners, beats, strict=True):
        if last is None:
            continue  # never seen beating: not known to be dead
        try:
            age = now - float(last)
        except ValueError:
            continue
        if age > bound:
            dead.append(name)
    return dead


def reap(replica: str) -> int:
    """Disconnect and deregister every instance `replica` still holds; how many."""
    from meshapi.models import ProxyConnection, ProxyInstance
    from workers.xds.auth import Identity
    from workers.xds.status import Declared, deregister_if_gone

    close_old_connections()
    rows = list(
        ProxyInstance.objects.filter(replica=replica, disconnected_at__isnull=True).values(
            "pk",
            "stream",
            "tenant_id",
            "tenant__account_id",
            "mesh__name",
            "kind",
            "name",
            "instance_id",
            "address",
            "ports",
            "consumer",
            "interception",
            "app_port",
            "ingress_port",
            "egress_port",
        )
    )
    reaped = 0
    for row in rows:
        now = timezone.now()
        with transaction.atomic():
            owned = ProxyInstance.objects.filter(
                pk=row["pk"], replica=replica, stream=row["stream"], disconnected_at__isnull=True
            ).update(disconnected_at=now)
            if not owned:
                continue  # reconnected meanwhile, or another replica reaped it
            ProxyConnection.objects.filter(
                instance_id=row["pk"], stream=row["stream"], closed_at__isnull=True
            ).update(closed_at=now)
        identity = Identity(
            row["tenant_id"],
            row["tenant__account_id"],
            row["mesh__name"],
            row["kind"],
            row["name"],
            "reaped",
        )
        declared = Declared(
            row["consumer"],
            row["interception"],
            row["instance_id"],
            row["address"],
            list(row["ports"] or []),
            (row["app_port"], row["ingress_port"], row["egress_port"]),
        )
        deregister_if_gone(identity, declared, row["pk"], row["stream"])
        reaped += 1
    if reaped:
        log.warning(
            "xds: replica %s stopped beating; deregistered %d of its instances", replica, reaped
        )
    return reaped


def sweep(bound: float) -> int:
    """Deregister the `registered` endpoints of instances disconnected more than `bound`
    seconds ago (their own deregistration was dropped: a replica stopped meanwhile); how
    many endpoints. One query when there is nothing to do: the registered endpoints, each
    looked up in the instances' unique index (mesh, kind, name, instance id)."""
    from django.db.models import OuterRef, Subquery

    from meshapi.models import Endpoint, Mesh, ProxyInstance
    from meshapi.services import endpoints
    from tenants.models import Tenant

    close_old_connections()
    cutoff = timezone.now() - timedelta(seconds=bound)
    # A correlated LIMIT 1 lookup, not EXISTS: PostgreSQL turns an EXISTS into a hash join
    # over every instance ever disconnected (the rows are kept), which only grows.
    gone = (
        ProxyInstance.objects.filter(
            mesh_id=OuterRef("mesh_id"),
            kind="virtualNode",
            name=OuterRef("virtual_node__name"),
            instance_id=OuterRef("instance_id"),
            disconnected_at__lt=cutoff,
        )
        .order_by()
        .values("pk")[:1]
    )
    rows = (
        Endpoint.objects.filter(source=Endpoint.Source.REGISTERED)
        .exclude(instance_id="")
        .alias(gone=Subquery(gone))
        .filter(gone__isnull=False)
        .order_by()
        .values(
            "pk",
            "instance_id",
            "tenant_id",
            "mesh_id",
            "mesh__name",
            "virtual_node__name",
            "port",
            "address",
            "target_port",
        )
    )
    by_instance: dict[tuple[int, str, str], list[dict]] = defaultdict(list)
    for row in rows:
        by_instance[(row["mesh_id"], row["virtual_node__name"], row["instance_id"])].append(row)
    removed = 0
    for (mesh_id, node, instance_id), found in by_instance.items():
        tenant = Tenant.objects.get(pk=found[0]["tenant_id"])
        try:
            with transaction.atomic():
                # The mesh first (the lock every mesh write takes), then the instance: a
                # reconnect (open_instance) waits for this, and registers after it.
                Mesh.objects.select_for_update(no_key=True).filter(pk=mesh_id).first()
                still_gone = list(
                    ProxyInstance.objects.select_for_update()
                    .filter(
                        mesh_id=mesh_id,
                        kind="virtualNode",
                        name=node,
                        instance_id=instance_id,
                        disconnected_at__lt=cutoff,
                    )
                    .values_list("pk", flat=True)
                )
                if not still_gone:
                    continue  # it reconnected meanwhile
                for row in found:
                    if endpoints.deregister(
                        tenant,
                        mesh_name=row["mesh__name"],
                        node_name=node,
                        port=row["port"],
                        address=row["address"],
                        target_port=row["target_port"],
                        instance_id=instance_id,
                    ):
                        removed += 1
        except endpoints.EndpointError:
            continue  # the mesh or node went away, and its endpoints with it
    if removed:
        log.warning(
            "xds: deregistered %d endpoint(s) of %d instance(s) disconnected over %.0f s ago",
            removed,
            len(by_instance),
            bound,
        )
    return removed


class Reaper:
    """One replica's heartbeat, its watch over the others and its sweep (a task on the
    loop)."""

    def __init__(
        self,
        replica: str,
        grace_seconds: float,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        dead_after_seconds: float = DEAD_AFTER_SECONDS,
    ) -> None:
        self.replica = replica
        self.heartbeat_seconds = heartbeat_seconds
        # Its proxies get the grace period a closed stream gets, counted from its last beat;
        # a disconnected instance gets as long before the sweep takes its endpoints.
        self.bound = dead_after_seconds + grace_seconds

    async def run(self) -> None:
        swept_at = -float("inf")
        while True:
            if settings.REDIS_URL:
                try:
                    await asyncio.to_thread(beat, self.replica)
                    dead = await sync_to_async(dead_replicas, thread_sensitive=False)(
                        self.replica, self.bound
                    )
                    for name in dead:
                        await sync_to_async(reap, thread_sensitive=False)(name)
                except Exception:  # noqa: BLE001 - Redis or the database away: next round
                    log.warning("xds: heartbeat or reaping failed", exc_info=True)
            # An endpoint qualifies only `bound` seconds after its instance went: sweeping
            # a few times per bound finds it soon enough without a scan every beat.
            if time.monotonic() >= swept_at + self.bound / 4:
                swept_at = time.monotonic()
                try:
                    await sync_to_async(sweep, thread_sensitive=False)(self.bound)
                except Exception:  # noqa: BLE001 - the database away: next round
                    log.warning("xds: sweeping disconnected instances failed", exc_info=True)
            await asyncio.sleep(self.heartbeat_seconds)
