"""Signal receivers connected in MeshapiConfig.ready()."""

from django.dispatch import receiver

from meshapi.models import Mesh
from meshapi.signals import mesh_changed


@receiver(mesh_changed, sender=Mesh, dispatch_uid="meshapi.compile_on_change")
def compile_on_change(sender, mesh_id: int, revision: int, **kwargs) -> None:
    """After a write to a mesh committed: compile it (queued, or in-process when embedded).
    A broker that is down is logged, not raised: the write stands, the reconciler compiles."""
    from workers.tasks.compile import enqueue_compile

    enqueue_compile(mesh_id)
