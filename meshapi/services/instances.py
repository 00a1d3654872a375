"""Proxy instances as the tenant sees them (written by the xDS server, workers/xds/status.py):
connected or not, on which replica, what each acknowledged, and why it last refused."""

from meshapi.models import ProxyConfig, ProxyConnection, ProxyInstance
from meshapi.models.instances import CONNECTIONS_KEPT
from meshapi.models.proxies import VARIANT_FIELDS
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
            "appPort": i.app_port or None,
            "ingressPort": i.ingress_port or None,
            "egressPort": i.egress_port or None,
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


def rollup(ref: ProxyRef, instances: list[dict]) -> dict:
    """Per node: how many instances are connected, how many acknowledged the current
    configuration of their variant for every type they use, and how many rejected it."""
    connected = [i for i in instances if i["connected"]]
    summary = {"connected": len(connected), "upToDate": 0, "rejectingCurrent": 0}
    if not connected:
        return summary
    current = {
        tuple(variant): versions or {}
        for *variant, versions in ProxyConfig.objects.filter(
            mesh=ref.mesh, kind=ref.kind, name=ref.name
        ).values_list(*VARIANT_FIELDS[2:], "current__manifest__type_versions")
    }
    labels = {label: type_url for type_url, label in TYPE_NAMES.items()}
    for instance in connected:
        # The variant it is served: its declared ports pick it (see workers/xds/server.py).
        variant = (
            instance["consumer"],
            instance["interception"],
            instance["appPort"] or 0,
            instance["ingressPort"] or 0,
            instance["egressPort"] or 0,
        )
        versions = current.get(variant, {})
        acked = instance["ackedVersions"]
        if acked and all(versions.get(labels[label]) == v for label, v in acked.items()):
            summary["upToDate"] += 1
        nack = instance["lastNack"]
        if nack and versions.get(labels.get(nack["type"], "")) == nack["version"]:
            summary["rejectingCurrent"] += 1
    return summary
