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
