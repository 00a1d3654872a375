"""Tasks go through the real Redis broker to a real worker when REDIS_URL is set."""

import os
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from meshapi.models import IdempotencyRecord
from tenants.services import create_tenant
from workers.celery import app
from workers.tasks.maintenance import prune_idempotency_records


@pytest.fixture
def redis_worker(transactional_db):
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs REDIS_URL")
    from celery.contrib.testing.worker import start_worker

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    app.control.purge()  # compiles queued by earlier tests' writes, for meshes long gone
    try:
        with start_worker(app, perform_ping_check=False, pool="solo", loglevel="WARNING"):
            yield
    finally:
        app.conf.task_always_eager = eager


def test_prune_forgets_only_old_client_tokens(redis_worker):
    tenant, _ = create_tenant("acme", "alice@example.com")
    old = IdempotencyRecord.objects.create(
        tenant=tenant, operation="CreateMesh", client_token="old", request_digest="x", response={}
    )
    IdempotencyRecord.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(hours=25)
    )
    IdempotencyRecord.objects.create(
        tenant=tenant, operation="CreateMesh", client_token="new", request_digest="y", response={}
    )
    result = prune_idempotency_records.apply_async()
    # No result backend: wait for the effect instead of the return value.
    deadline = timezone.now() + timedelta(seconds=20)
    while IdempotencyRecord.objects.filter(client_token="old").exists():
        assert timezone.now() < deadline, f"worker never ran task {result.id}"
        time.sleep(0.05)
    assert list(IdempotencyRecord.objects.values_list("client_token", flat=True)) == ["new"]
