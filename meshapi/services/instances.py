"""Proxy instances as the tenant sees them (written by the xDS server, workers/xds/status.py):
connected or not, on which replica, what each acknowledged, and why it last refused."""

from meshapi.models import ProxyConnection, ProxyInstance
from meshapi.models.instances import CONNECTIONS_KEPT
from meshapi.services.proxies import TYPE_NAMES, ProxyRef


def instances_of(ref: ProxyRef) -> list[dict]:
    """Every instance of the proxy, connected ones first, with its recent connections."""
    instances = list(ProxyInstance.objects.filter(mesh=ref.mesh, kind=ref.kind, name=ref.name))
    history: dict[int, list[dict]] = {}
    rows = ProxyConnection.objects.filter(instance__in=instances).order_by("-id")
    if not instances:
        rows = ProxyConnection.objects.none()
    for row in rows:
        kept = history.setdefault(row.instance_id, [])
        if len(kept) < CONNECTIONS_KEPT:
            kept.append(
                {
                    "stream": row.stream,
                    "replica": row.replica,
                    "protocol": row.protocol,
                    "peer": row.peer,
                    "openedAt": row.opened_at,
                    "closedAt": row.closed_at,
                }
            )
    instances.sort(key=lambda i: (not i.connected, i.instance_id))
    return [
        {
            "instanceId": i.instance_id,
            "address": i.address,
            "ports": i.ports,
            "consumer": i.consumer,
            "interception": i.interception,
            "replica": i.replica,
            "connected": i.connected,
            "connectedSince": i.connected_since,
            "disconnectedAt": i.disconnected_at,
            "ackedVersions": {
                label: i.acked[type_url]
                for type_url, label in TYPE_NAMES.items()
                if type_url in i.acked
            },
            "lastNack": _nack(i.last_nack),
            "connections": history.get(i.pk, []),
        }
        for i in instances
    ]


def _nack(nack: dict | None) -> dict | None:
    if not nack:
        return None
    return {
        "type": TYPE_NAMES.get(nack.get("typeUrl", ""), nack.get("typeUrl")),
        "version": nack.get("version"),
        "errorDetail": nack.get("errorDetail"),
        "at": nack.get("at"),
    }
