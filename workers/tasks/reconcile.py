"""The safety net of the pipeline: compile every mesh whose compiled revision lags.

Runs on a beat schedule and once when a worker starts, so a compile that was never
enqueued (Redis down at commit) or never finished (worker killed) only waits until then.
"""

from celery.signals import worker_ready
from django.db.models import F

from workers.celery import mesh_task
from workers.tasks.compile import enqueue_compile


@mesh_task("compile.reconcile_meshes")
def reconcile_meshes() -> list[int]:
    """Enqueue a compile for each mesh that lags or has a variant asked for but not compiled."""
    from meshapi.models import Mesh, ProxyConfig

    lagging = set(
        Mesh.objects.filter(compiled_revision__lt=F("revision")).values_list("pk", flat=True)
    )
    lagging.update(
        ProxyConfig.objects.filter(current__isnull=True).values_list("mesh_id", flat=True)
    )
    for mesh_id in sorted(lagging):
        enqueue_compile(mesh_id)
    return sorted(lagging)


@worker_ready.connect
def reconcile_at_start(sender=None, **kwargs) -> None:
    """A worker starting may follow an outage: catch up before the next beat."""
    reconcile_meshes.apply_async()
