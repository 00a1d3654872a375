"""Compile a mesh into stored, published proxy configuration (see workers/pipeline.py)."""

import logging

from workers.celery import mesh_task

log = logging.getLogger(__name__)

# A write must not wait long on a broker that is down: the reconciler catches up later.
ENQUEUE_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.2}


@mesh_task("compile.compile_mesh")
def compile_mesh(mesh_id: int, full: bool = False) -> dict:
    """Idempotent: compiles whatever changed since the stored configuration, if anything."""
    from workers.pipeline import run_compile

    return run_compile(mesh_id, full=full).summary()


def enqueue_compile(mesh_id: int) -> bool:
    """Queue a compile of the mesh; False (logged) if the broker could not be reached.
    Callers run after their write committed: a failed enqueue only delays the compile
    until the reconciler finds the mesh's compiled revision lagging."""
    try:
        result = compile_mesh.apply_async((mesh_id,), retry=True, retry_policy=ENQUEUE_RETRY)
    except Exception:  # noqa: BLE001 - the write is committed; never fail it now
        log.warning(
            "could not enqueue compile_mesh(%s): the reconciler will", mesh_id, exc_info=True
        )
        return False
    if compile_mesh.app.conf.task_always_eager and result.failed():
        # Embedded mode ran it in-process and swallowed the error: say so.
        log.error("compile_mesh(%s) failed:\n%s", mesh_id, result.traceback)
    return True


@mesh_task("compile.prune_config_resources")
def prune_config_resources() -> int:
    """Delete versions left without their variant, then per mesh the manifests no version
    refers to and the stored xDS resources no kept manifest refers to any more; returns how
    many resources went."""
    from meshapi.models import Mesh
    from meshapi.services.proxies import prune_orphaned_versions, prune_resources

    orphans = prune_orphaned_versions()
    if orphans:
        log.info("pruned %d versions whose variant was gone", orphans)
    return sum(prune_resources(mesh_id) for mesh_id in Mesh.objects.values_list("pk", flat=True))
