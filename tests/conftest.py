import os

import pytest

from tests.support.live import LiveServer
from tests.support.personas import make_personas


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    """A test database per run, so runs started side by side do not drop each other's."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if "sqlite" not in db["ENGINE"]:
        db.setdefault("TEST", {})["NAME"] = f"test_{db['NAME']}_{os.getpid()}"


@pytest.fixture(scope="session")
def api_server(django_db_setup, django_db_blocker):
    """A gunicorn process serving the test database (data must be committed to be seen)."""
    from django.db import connection

    settings = connection.settings_dict
    url = (
        f"postgres://{settings['USER'] or 'postgres'}@{settings['HOST'] or '127.0.0.1'}:"
        f"{settings['PORT'] or 5432}/{settings['NAME']}"
    )
    if "sqlite" in settings["ENGINE"]:
        pytest.skip("the live-server tests need PostgreSQL (set DATABASE_URL)")
    server = LiveServer(
        {"DATABASE_URL": url, "MESHPLANE_DB_CONN_MAX_AGE": "0", "MESHPLANE_QUERY_COUNT_HEADER": "1"}
    )
    yield server
    server.stop()


@pytest.fixture
def personas(api_server, transactional_db):
    return make_personas(api_server.url)


@pytest.fixture
def alice(personas):
    return personas.alice


@pytest.fixture
def bob(personas):
    return personas.bob


@pytest.fixture
def charlie(personas):
    return personas.charlie


def pytest_report_header(config):
    return f"DATABASE_URL={os.environ.get('DATABASE_URL', '(sqlite)')}"


def pytest_generate_tests(metafunc):
    from tests.support.endpoints import pytest_generate_tests as endpoint_params

    endpoint_params(metafunc)
