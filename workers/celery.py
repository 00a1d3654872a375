"""The Celery app and the one decorator every task goes through.

Without REDIS_URL tasks run in-process (eager), so the embedded mode needs no broker.
"""

import functools
import logging
import os
import random
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshapi.settings")

app = Celery("meshplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.beat_schedule = {
    "prune-idempotency-records": {
        "task": "maintenance.prune_idempotency_records",
        "schedule": crontab(minute=17),
    },
    # The pipeline's safety net: compile meshes whose compiled revision lags (it also runs
    # when a worker starts), and drop stored xDS resources no kept version uses.
    "reconcile-meshes": {"task": "compile.reconcile_meshes", "schedule": 60.0},
    # A rotated-out mesh CA leaves the trust bundle once its last leaf expired.
    "retire-expired-cas": {"task": "maintenance.retire_expired_cas", "schedule": 60.0},
    "prune-config-resources": {
        "task": "compile.prune_config_resources",
        "schedule": crontab(minute=43),
    },
}
for _module in ("maintenance", "compile", "reconcile"):
    app.autodiscover_tasks(["workers.tasks"], related_name=_module)

log = logging.getLogger("workers")

# Errors worth retrying: a dependency that is briefly away. Anything else is a bug.
TRANSIENT: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
try:
    from django.db import InterfaceError, OperationalError

    TRANSIENT += (OperationalError, InterfaceError)
except ImportError:  # pragma: no cover - Django is always installed with the workers
    pass


def mesh_task(name: str, max_retries: int = 5) -> Callable:
    """Register a task under an explicit name, with logging context and a retry policy
    (exponential backoff with jitter, transient errors only). Tasks take ids, re-fetch
    state and must be idempotent: they run with acks_late."""

    def wrap(fn: Callable[..., Any]) -> Any:
        @app.task(name=name, bind=True, acks_late=True, max_retries=max_retries)
        @functools.wraps(fn)
        def task(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except TRANSIENT as exc:
                delay = min(60, 2**self.request.retries) + random.random()
                log.warning("task %s: transient %r, retry in %.1fs", name, exc, delay)
                raise self.retry(exc=exc, countdown=delay) from exc

        return task

    return wrap
