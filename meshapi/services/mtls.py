"""A mesh's automatic mTLS policy: DISABLED (default), PERMISSIVE or STRICT.

App Mesh never had one, so it lives beside the mesh's App Mesh spec (`Mesh.mtls_mode`)
and is written only here: one transaction that locks the mesh row (the lock every mesh
write takes), stores the mode, bumps the mesh revision and records an audit event; after
commit the mesh compiles, and since the policy is part of the mesh's input hash every
proxy of the mesh gets a new configuration (workers/compiler/authz.py, tls.py). Turning it
on makes the mesh CA if the mesh has none yet, so the first push already carries the trust
bundle.
"""

from django.db import transaction
from django.db.models import F

from meshapi.models import Mesh
from meshapi.models.meshes import MtlsMode
from meshapi.services import resources
from meshapi.services.kinds import MESH
from meshapi.signals import mesh_changed
from tenants.identity import services as identity
from tenants.models import AuditEvent, Tenant

MODES = tuple(MtlsMode.values)


class MtlsError(Exception):
    """A request the caller can fix; `field` names the input, `status` the HTTP answer."""

    status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class MeshNotFound(MtlsError):
    status = 404


def _mesh(tenant: Tenant, mesh_name: str, *, lock: bool = False) -> Mesh:
    meshes = Mesh.objects.filter(tenant=tenant, name=mesh_name)
    if lock:
        meshes = meshes.select_for_update(no_key=True)
    mesh = meshes.first()
    if mesh is None:
        raise MeshNotFound("mesh", f"Mesh '{mesh_name}' not found.")
    return mesh


def describe(mesh: Mesh) -> dict:
    return {"meshName": mesh.name, "mode": mesh.mtls_mode}


def get_policy(tenant: Tenant, mesh_name: str) -> dict:
    """The mesh's policy (DISABLED until someone sets it)."""
    return describe(_mesh(tenant, mesh_name))


def check_mode(mode: object) -> str:
    if mode not in MODES:
        raise MtlsError(
            "mode", f"mode: {mode!r} is not one of {', '.join(MODES)} (DISABLED turns it off)."
        )
    return mode  # type: ignore[return-value]


def set_policy(tenant: Tenant, writer: resources.Writer, *, mesh_name: str, mode: str) -> dict:
    """Set the mesh's mode. Setting the mode it already has changes nothing: no revision,
    no compile, no audit event."""
    mode = check_mode(mode)
    with transaction.atomic():
        mesh = _mesh(tenant, mesh_name, lock=True)
        before = mesh.mtls_mode
        if before == mode:
            return describe(mesh)
        Mesh.objects.filter(pk=mesh.pk).update(mtls_mode=mode, revision=F("revision") + 1)
        mesh.mtls_mode = mode
        AuditEvent.objects.create(
            tenant=tenant,
            actor=writer.actor,
            action="UpdateMeshMtls",
            resource_type="meshMtls",
            resource_arn=resources.arn_of(tenant, MESH, mesh),
            before={"mode": before},
            after={"mode": mode},
            request_id=writer.request_id,
        )
        mesh_id = mesh.pk

        def notify() -> None:
            revision = Mesh.objects.filter(pk=mesh_id).values_list("revision", flat=True).first()
            if revision is not None:
                mesh_changed.send(sender=Mesh, mesh_id=mesh_id, revision=revision)

        transaction.on_commit(notify)
        if mode != MtlsMode.DISABLED:
            # Proxies need the mesh CA's bundle to check each other from the first push,
            # not only once some proxy has joined (which makes the CA otherwise).
            identity.ensure_mesh_ca(mesh)
    return describe(mesh)
