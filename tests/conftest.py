import os
import re
import signal
import sys
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.live import LiveServer, live_database_url
from tests.support.personas import make_personas

# Every write enqueues a compile, and every stored version is announced on a pub/sub
# channel. Give this run's processes (this one, live servers, workers, xDS servers) a queue
# and a channel of their own on the shared Redis, so runs side by side never take each
# other's tasks or hear each other's versions. Under pytest-xdist each worker (gw0, gw1…) is
# a run of its own with its own test database: it gets its own queue and channel (suffixed
# with the worker id: the controller's names are inherited) and its own Redis database
# number, so keys such as xDS replica heartbeats are not shared either.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def _per_worker(name: str, default: str) -> str:
    value = os.environ.get(name) or default
    if _WORKER:
        value = f"{value}-{_WORKER}"
    os.environ[name] = value
    return value


def _worker_redis_url(url: str) -> str:
    """gw0 keeps the database number of REDIS_URL, gw1 the one below it, and so on."""
    if not url or not _WORKER.startswith("gw"):
        return url
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or "0")
    return urlunsplit(parts._replace(path=f"/{(base - int(_WORKER[2:])) % 16}"))


def _isolate_run() -> None:
    from django.conf import settings

    from workers.celery import app

    queue = _per_worker("MESHPLANE_TASK_QUEUE", f"meshplane-test-{os.getpid()}")
    channel = _per_worker("MESHPLANE_CONFIG_CHANNEL", f"meshplane:config:test-{os.getpid()}")
    redis_url = _worker_redis_url(os.environ.get("REDIS_URL", ""))
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
    # Django's settings and the Celery app are configured already here: tell them directly.
    settings.MESHPLANE_CONFIG_CHANNEL = channel
    app.conf.task_default_queue = queue
    if redis_url:
        settings.REDIS_URL = settings.CELERY_BROKER_URL = redis_url
        app.conf.broker_url = redis_url


_isolate_run()


def _interrupt_on_sigterm() -> None:
    """SIGTERM ends a run as Ctrl-C does. `timeout` and a cancelled CI job send SIGTERM, which
    by default kills pytest (each xdist worker too) at once: no fixture is torn down, so the
    servers the fixtures started are not stopped and the run's test database is never
    dropped. Raised as KeyboardInterrupt, pytest tears the session down first."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set a handler (and receives the signal)
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # someone else handles it

    first: list[float] = []

    def interrupt(signum: int, frame: object) -> None:
        if not first:
            first.append(time.monotonic())
            raise KeyboardInterrupt("SIGTERM")
        if time.monotonic() - first[0] < 2:
            return  # the same stop again (`timeout` signals its child, then the group)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a later one: stop at once
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, interrupt)


_interrupt_on_sigterm()


# The run's id: the pytest process's pid, inherited by its xdist workers.
if not _WORKER:
    os.environ["MESHPLANE_TEST_RUN"] = str(os.getpid())
_RUN = os.environ.get("MESHPLANE_TEST_RUN") or str(os.getpid())


def _own_databases() -> re.Pattern:
    """The test databases this process answers for: an xdist worker its own, the run's
    main process every one of the run's. (Made now: a failed drop leaves NAME set to the
    test database's name.)"""
    from django.conf import settings

    name = re.escape(f"test_{settings.DATABASES['default']['NAME']}_{_RUN}")
    return re.compile(f"{name}_{_WORKER}" if _WORKER else f"{name}(_gw[0-9]+)?")


_OWN_DATABASES = _own_databases()


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    """A test database per run (per worker: test_<name>_<run>_gw0…), so runs started side
    by side do not drop each other's."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if "sqlite" not in db["ENGINE"]:
        suffix = f"_{_WORKER}" if _WORKER else ""
        db.setdefault("TEST", {})["NAME"] = f"test_{db['NAME']}_{_RUN}{suffix}"


def pytest_unconfigure(config: pytest.Config) -> None:
    """A test database of this run still there once its process is done was not dropped
    by the teardown: a session was still connected to it (pytest-django only warns), or an
    xdist worker was ended before its teardown finished (after an interrupt the controller
    allows 10 s). Name the sessions still connected (the leak to fix), then drop it."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if "postgresql" not in db["ENGINE"] or config.getoption("reuse_db", False):
        return
    import psycopg

    params = {"host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432}
    params.update(user=db["USER"] or "postgres", password=db["PASSWORD"] or None)
    try:
        admin = psycopg.connect(dbname="postgres", autocommit=True, **params)
    except psycopg.OperationalError:
        return  # the server is away: the run has said so already
    with admin:
        names = admin.execute("SELECT datname FROM pg_database").fetchall()
        for (name,) in names:
            if not _OWN_DATABASES.fullmatch(name):
                continue
            sessions = admin.execute(
                "SELECT pid, application_name, client_port, backend_start, state, query"
                " FROM pg_stat_activity WHERE datname = %s",
                (name,),
            ).fetchall()
            print(f"\ntest database {name} was not dropped; sessions on it:", file=sys.stderr)
            for row in sessions or ["none (their process has exited)"]:
                print(f"  {row}", file=sys.stderr)
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def api_server(django_db_setup, django_db_blocker):
    """A gunicorn process serving the test database (data must be committed to be seen)."""
    from django.db import connection

    if "sqlite" in connection.settings_dict["ENGINE"]:
        pytest.skip("the live-server tests need PostgreSQL (set DATABASE_URL)")
    server = LiveServer(
        {
            "DATABASE_URL": live_database_url(),
            "MESHPLANE_DB_CONN_MAX_AGE": "0",
            "MESHPLANE_QUERY_COUNT_HEADER": "1",
            # Query counts are compared with a baseline: every request resolves its key
            # from the database. tests/tenants/test_keycache.py runs a server with the cache.
            "MESHPLANE_KEY_CACHE_SECONDS": "0",
        }
    )
    yield server
    server.stop()


@pytest.fixture
def personas(api_server, transactional_db):
    return make_personas(api_server.url)


@pytest.fixture
def embedded(settings):
    """Tasks in-process (every write compiles before it returns) and pub/sub in-process,
    as `make demo` runs: no Celery worker or Redis needed."""
    from workers.celery import app

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    settings.REDIS_URL = ""
    yield
    app.conf.task_always_eager = eager


@pytest.fixture
def alice(personas):
    return personas.alice


@pytest.fixture
def bob(personas):
    return personas.bob


@pytest.fixture
def charlie(personas):
    return personas.charlie


@pytest.fixture(scope="session", autouse=True)
def _drop_run_queue():
    """Tasks left in this run's queue have no one to run them once the run ends."""
    yield
    url = os.environ.get("REDIS_URL")
    if url:
        import redis

        queue = os.environ["MESHPLANE_TASK_QUEUE"]
        with redis.Redis.from_url(url) as client:
            client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


def pytest_report_header(config):
    return f"DATABASE_URL={os.environ.get('DATABASE_URL', '(sqlite)')}"


def pytest_generate_tests(metafunc):
    from tests.support.endpoints import pytest_generate_tests as endpoint_params

    endpoint_params(metafunc)
