from datetime import timedelta

from django.utils import timezone

from workers.celery import mesh_task

IDEMPOTENCY_WINDOW = timedelta(hours=24)  # the same window meshapi.services.resources honours


@mesh_task("maintenance.prune_idempotency_records")
def prune_idempotency_records(window_seconds: int = int(IDEMPOTENCY_WINDOW.total_seconds())) -> int:
    """Forget clientTokens older than the window; a retry after that is a new request."""
    from meshapi.models import IdempotencyRecord

    cutoff = timezone.now() - timedelta(seconds=window_seconds)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


@mesh_task("maintenance.retire_expired_cas")
def retire_expired_cas() -> int:
    """Recompile meshes whose rotated-out CA has no valid leaf left, so their SDS trust
    bundle drops it (tenants.identity.services.retire_expired_cas)."""
    from tenants.identity.services import retire_expired_cas as retire

    return retire()
