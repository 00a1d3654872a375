import os

import pytest

from tests.support.redis_server import RedisServer
from workers.celery import app

# The live tests need the real broker and pub/sub the pipeline publishes on.
needs_redis = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL")


@pytest.fixture
def worker(transactional_db):
    """A Celery worker in a thread, consuming this run's queue on the real broker."""
    from celery.contrib.testing.worker import start_worker

    app.control.purge()  # compiles queued by earlier tests, for meshes long gone
    with start_worker(app, perform_ping_check=False, pool="solo", loglevel="WARNING"):
        yield


@pytest.fixture
def own_redis(settings):
    """A redis-server of the test's own: the pipeline (its worker runs in this process)
    publishes there, and the test's replicas listen and beat there, apart from every other
    test's."""
    server = RedisServer()
    settings.REDIS_URL = server.url
    yield server
    server.stop()
